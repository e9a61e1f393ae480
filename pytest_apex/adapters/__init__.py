"""Adapters: how the suites act as users of a given app (the contract is in `base`)."""

from pytest_apex.adapters.base import (
    AgentRun,
    AgentSession,
    AppAdapter,
    RawTokenSocket,
    ResourceSession,
    UserSession,
)
from pytest_apex.adapters.rest import Answer, RestAdapter, RestUserSession

__all__ = [
    "AgentRun",
    "AgentSession",
    "Answer",
    "AppAdapter",
    "RawTokenSocket",
    "ResourceSession",
    "RestAdapter",
    "RestUserSession",
    "UserSession",
]
