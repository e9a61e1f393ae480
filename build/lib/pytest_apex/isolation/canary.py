"""Canary tokens: one unique token per user, embedded in everything that user sends.

Every request text and thread title a user sends carries their canary. Whatever a user
later receives (events, thread lists, thread bodies) is scanned for canaries: finding
another user's canary there is a cross-user leak, traceable to its owner. A canary that
belongs to nobody in this run (a user of an earlier run, say) is a leak too, with an
unknown owner.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass
from typing import Any, Final

CANARY_PREFIX: Final = "apexcanary-"
CANARY_PATTERN: Final = re.compile(r"apexcanary-[0-9a-f]{16}")


def new_canary() -> str:
    """A fresh token: 64 random bits, so two users never share one by chance."""
    return CANARY_PREFIX + secrets.token_hex(8)


def redact_canary(token: str) -> str:
    """A canary shortened for messages: enough to tell tokens apart, not to replay them."""
    return token[: len(CANARY_PREFIX) + 4] + "…"


def text_of(payload: Any) -> str:
    if isinstance(payload, str):
        return payload
    if isinstance(payload, bytes | bytearray):
        return bytes(payload).decode("utf-8", errors="replace")
    return json.dumps(payload, default=str, ensure_ascii=False)


@dataclass(frozen=True)
class Sighting:
    """A canary found in what a user received: whose it is (None: nobody of this run)."""

    owner: int | None
    token: str


class CanaryBook:
    """The canaries of one run: which user owns which token."""

    def __init__(self) -> None:
        self._token_of: dict[int, str] = {}
        self._owner_of: dict[str, int] = {}

    def issue(self, owner: int) -> str:
        """The canary of user `owner` (issued once; the same token on every later call)."""
        token = self._token_of.get(owner)
        if token is None:
            token = new_canary()
            while token in self._owner_of:  # pragma: no cover - 64 random bits
                token = new_canary()
            self._token_of[owner] = token
            self._owner_of[token] = owner
        return token

    def token_of(self, owner: int) -> str:
        return self._token_of[owner]

    def owner_of(self, token: str) -> int | None:
        return self._owner_of.get(token)

    def __len__(self) -> int:
        return len(self._token_of)

    def sightings(self, payload: Any) -> list[Sighting]:
        """Every distinct canary in `payload` (any JSON-able value, str or bytes)."""
        found = dict.fromkeys(CANARY_PATTERN.findall(text_of(payload)))
        return [Sighting(self._owner_of.get(token), token) for token in found]

    def foreign(self, payload: Any, viewer: int) -> list[Sighting]:
        """The canaries in `payload` that are not `viewer`'s own: each one is a leak."""
        return [s for s in self.sightings(payload) if s.owner != viewer]
