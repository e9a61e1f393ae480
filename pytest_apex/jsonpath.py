"""Reading a value at a dotted path of a JSON body, the way descriptions name fields."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def dig(body: Any, path: str) -> Any:
    """The value at dotted `path` (``"user.id"``, ``"items.0.id"``); None when a step is missing.

    An empty path is the body itself.
    """
    value = body
    for key in path.split(".") if path else ():
        if isinstance(value, Mapping) and key in value:
            value = value[key]
        elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        else:
            return None
    return value
