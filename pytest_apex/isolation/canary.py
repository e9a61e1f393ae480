"""Canary tokens: unique per user *and* per item, placed where truncation keeps them.

A canary is ``apexcanary-`` + 8 hex digits naming the user + 8 hex digits naming the item
(a thread, a message, a run's request). The user part comes first, so a preview that keeps
only ``apexcanary-`` and 8 digits still says whose data leaked; the full token says which of
their items. Everything a user sends starts with one of their canaries (titles, messages,
requests), because previews and truncation keep the start of a text.

Whatever a user later receives is scanned for them (`identities.IdentityBook`): finding
another user's canary there is a cross-user leak, traceable to its owner and item. A canary
that belongs to nobody in this run (a user of an earlier run, say) is a leak too, with an
unknown owner.
"""

from __future__ import annotations

import re
import secrets
from typing import Final

CANARY_PREFIX: Final = "apexcanary-"
USER_HEX: Final = 8  # digits naming the user: 32 bits tell thousands of users apart
ITEM_HEX: Final = 8
CANARY_PATTERN: Final = re.compile(r"apexcanary-[0-9a-f]{16}")


def new_canary() -> str:
    """A fresh token: 64 random bits, so two users never share one by chance."""
    return CANARY_PREFIX + secrets.token_hex(8)


def redact_canary(token: str) -> str:
    """A canary shortened for messages: enough to tell tokens apart, not to replay them."""
    return token[: len(CANARY_PREFIX) + 4] + "…"


class CanaryBook:
    """The canaries of one run: which user owns which token, and which item it marks."""

    def __init__(self) -> None:
        self._token_of: dict[int, str] = {}
        self._owner_of: dict[str, int] = {}
        self._user_part: dict[int, str] = {}
        self._owner_of_part: dict[str, int] = {}
        self._label_of: dict[str, str] = {}

    def _part_of(self, owner: int) -> str:
        part = self._user_part.get(owner)
        if part is None:
            part = secrets.token_hex(USER_HEX // 2)
            while part in self._owner_of_part:  # pragma: no cover - 32 random bits
                part = secrets.token_hex(USER_HEX // 2)
            self._user_part[owner] = part
            self._owner_of_part[part] = owner
        return part

    def issue(self, owner: int) -> str:
        """The canary of user `owner` (issued once; the same token on every later call)."""
        token = self._token_of.get(owner)
        if token is None:
            token = self.item(owner, "the user")
            self._token_of[owner] = token
        return token

    def item(self, owner: int, label: str) -> str:
        """A new canary for one item of `owner` (`label` says which, e.g. "thread 1")."""
        part = self._part_of(owner)
        token = CANARY_PREFIX + part + secrets.token_hex(ITEM_HEX // 2)
        while token in self._owner_of:  # pragma: no cover - 32 random bits per user
            token = CANARY_PREFIX + part + secrets.token_hex(ITEM_HEX // 2)
        self._owner_of[token] = owner
        self._label_of[token] = label
        return token

    def token_of(self, owner: int) -> str:
        return self._token_of[owner]

    def owner_of(self, token: str) -> int | None:
        """Whose canary `token` is: the full token, or a truncation keeping the user part."""
        owner = self._owner_of.get(token)
        if owner is None and token.startswith(CANARY_PREFIX):
            owner = self._owner_of_part.get(token[len(CANARY_PREFIX) :][:USER_HEX])
        return owner

    def label_of(self, token: str) -> str:
        return self._label_of.get(token, "")

    def __len__(self) -> int:
        return len(self._user_part)
