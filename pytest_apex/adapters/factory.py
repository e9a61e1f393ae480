"""Which adapter acts for the suites: the one the app description names.

``adapter = "rest"`` (the default) is the zero-code REST adapter; ``"module:factory"`` names
a callable ``(description, endpoints) -> AppAdapter`` for an app that needs Python (the
reference stack's agent runs over a WebSocket, say).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any, cast

from pytest_apex.adapters.base import AppAdapter
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
