"""Adapters: how the suites log users in and run the agent on a given app."""

from pytest_apex.adapters.base import AgentRun, AppAdapter, RawTokenSocket, UserSession

__all__ = ["AgentRun", "AppAdapter", "RawTokenSocket", "UserSession"]
