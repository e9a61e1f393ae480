"""Adapters: how the suites act as users of a given app (the contract is in `base`)."""

from pytest_apex.adapters.base import (
    AgentRun,
    AgentSession,
    AgentStream,
    AppAdapter,
    FrameSink,
    LoadSessions,
    RawTokenSocket,
    ResourceSession,
    RunSignal,
    StreamingAgentSession,
    UserSession,
)
from pytest_apex.adapters.rest import Answer, RestAdapter, RestUserSession

__all__ = [
    "AgentRun",
    "AgentSession",
    "AgentStream",
    "Answer",
    "AppAdapter",
    "FrameSink",
    "LoadSessions",
    "RawTokenSocket",
    "ResourceSession",
    "RestAdapter",
    "RestUserSession",
    "RunSignal",
    "StreamingAgentSession",
    "UserSession",
]
