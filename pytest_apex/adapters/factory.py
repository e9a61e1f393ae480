"""Which adapter acts for the suites: the one the app description names.

``adapter = "rest"`` (the default) is the zero-code REST adapter; ``"module:factory"`` names
a callable ``(description, endpoints) -> AppAdapter`` for an app that needs Python (the
reference stack's agent runs over a WebSocket, say).
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable, Mapping
from typing import Any, cast

from pytest_apex.adapters.base import AppAdapter, UserSession
from pytest_apex.adapters.rest import AdapterError, RestAdapter
from pytest_apex.app.model import AppDescription

AdapterFactory = Callable[[AppDescription, Mapping[str, str]], Any]


def _factory(spec: str) -> AdapterFactory:
    module_name, _, attribute = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise AdapterError(
            f"app description adapter {spec!r}: cannot import {module_name}: {exc}"
        ) from None
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise AdapterError(
            f"app description adapter {spec!r}: {module_name} has no callable {attribute!r}"
        )
    return cast(AdapterFactory, factory)


def adapter_for(description: AppDescription, endpoints: Mapping[str, str]) -> AppAdapter:
    """The adapter the description names, built for `endpoints`."""
    if description.adapter == "rest":
        return RestAdapter(description, endpoints)
    adapter: AppAdapter = _factory(description.adapter)(description, endpoints)
    return adapter


def username_for(description: AppDescription, index: int, run: str) -> str:
    """The name user `index` of run `run` signs up with, from the description's template."""
    values = {"index": str(index), "run": run, "domain": description.users.domain}
    name = description.users.username
    for key, value in values.items():
        name = name.replace("{" + key + "}", value)
    return name


class DescribedUsers:
    """`await users(i)` signs up and logs in user `i` of run `run` through the adapter the
    description names, built on first use in whichever process this object is in: it
    travels to another machine (a Ray actor) as the description and the endpoints only."""

    def __init__(self, description: AppDescription, endpoints: Mapping[str, str], run: str) -> None:
        self.description = description
        self.endpoints = dict(endpoints)
        self.run = run
        self._adapter: AppAdapter | None = None
        self._sessions: list[UserSession] = []

    def __getstate__(self) -> dict[str, Any]:
        # What it takes to make users elsewhere; connections stay with the process they are in.
        return {"description": self.description, "endpoints": self.endpoints, "run": self.run}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.description, self.endpoints, self.run = (
            state["description"],
            state["endpoints"],
            state["run"],
        )
        self._adapter, self._sessions = None, []

    async def __call__(self, index: int) -> UserSession:
        if self._adapter is None:
            self._adapter = adapter_for(self.description, self.endpoints)
        session = await self._adapter.login(username_for(self.description, index, self.run))
        self._sessions.append(session)
        return session

    async def aclose(self) -> None:
        """Closes every user made here, then the adapter."""
        await asyncio.gather(*(s.close() for s in self._sessions), return_exceptions=True)
        self._sessions.clear()
        if self._adapter is not None:
            await self._adapter.aclose()
            self._adapter = None
