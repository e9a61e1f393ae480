"""Every form of a user's data the isolation suite recognises, and where it turns up.

A leak rarely carries a whole canary: a preview truncates it, a serializer nests it, an
error message quotes another user's id. So each user's *identities* are known here — their
canary, user id, user name or e-mail, and the id of everything they created — and anything
another user received is searched for all of them:

- in the raw text: canaries (also truncated to a prefix of useful length), UUIDs, e-mail
  addresses, found by pattern and looked up;
- in the parsed JSON: every string value looked up as it is, and numeric values of id
  fields (a bare number elsewhere, such as a total, would match ids by chance).

Matching is by lookup, not by searching for every identity in every text, so the cost of a
scan grows with the size of what was received, not with the number of users.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from pytest_apex.isolation.canary import CANARY_PREFIX

IdentityKind = Literal["canary", "user_id", "username", "item_id"]

# A canary is CANARY_PREFIX + 16 hex digits; a prefix of 8 of them (32 bits) still names
# its owner among thousands of users without chance collisions.
CANARY_PREFIX_HEX: Final = 8
_CANARY_TEXT: Final = re.compile(re.escape(CANARY_PREFIX) + "([0-9a-f]{8,16})")
_UUID: Final = re.compile(
    r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"
)
_EMAIL: Final = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")


@dataclass(frozen=True)
class Sighting:
    """An identity found in what a user received: whose, which kind, and where."""

    owner: int
    kind: IdentityKind
    value: str
    where: str  # JSON path or "text"

    def describe(self) -> str:
        # A canary is never repeated in a message (a report must not hand it on); naming
        # whose it was says all a reader needs.
        shown = "their canary" if self.kind == "canary" else f"{self.kind} {self.value}"
        return f"{shown} at {self.where}"


def _is_id_key(key: str, id_keys: frozenset[str]) -> bool:
    if not key:
        return False
    lowered = key.lower()
    return lowered in id_keys or lowered == "id" or lowered.endswith(("_id", "id"))


class IdentityBook:
    """Which user each identity belongs to; scans payloads for other users' identities."""

    def __init__(self, id_keys: frozenset[str] = frozenset()) -> None:
        self._owner: dict[str, tuple[int, IdentityKind]] = {}
        self._canary_prefix: dict[str, tuple[int, str]] = {}
        self._id_keys = frozenset(k.lower() for k in id_keys)

    def add(self, owner: int, value: object, kind: IdentityKind) -> None:
        text = str(value)
        if not text:
            return
        self._owner.setdefault(text, (owner, kind))
        if kind == "canary" and text.startswith(CANARY_PREFIX):
            digits = text[len(CANARY_PREFIX) :]
            self._canary_prefix.setdefault(digits[:CANARY_PREFIX_HEX], (owner, text))
        elif kind in ("username", "user_id"):
            self._owner.setdefault(text.lower(), (owner, kind))

    def owner_of(self, value: object) -> int | None:
        found = self._owner.get(str(value))
        return found[0] if found else None

    def __len__(self) -> int:
        return len(self._owner)

    def sightings(self, body: Any, text: str = "") -> list[Sighting]:
        """Every identity in a payload: `body` parsed (any JSON value), `text` raw."""
        found: dict[tuple[int, str], Sighting] = {}
        for sighting in (*self._in_text(text), *self._in_json(body, "$")):
            found.setdefault((sighting.owner, sighting.value), sighting)
        return list(found.values())

    def foreign(self, body: Any, text: str, viewer: int) -> list[Sighting]:
        """The identities in a payload that are not `viewer`'s own: each one is a leak."""
        return [s for s in self.sightings(body, text) if s.owner != viewer]

    def _in_text(self, text: str) -> Iterator[Sighting]:
        if not text:
            return
        for match in _CANARY_TEXT.finditer(text):
            hit = self._canary_prefix.get(match.group(1)[:CANARY_PREFIX_HEX])
            if hit is not None:
                yield Sighting(hit[0], "canary", hit[1], "text")
        for pattern in (_UUID, _EMAIL):
            for match in pattern.finditer(text):
                value = match.group(0)
                hit = self._owner.get(value) or self._owner.get(value.lower())
                if hit is not None:
                    yield Sighting(hit[0], hit[1], value, "text")

    def _in_json(self, value: Any, path: str, key: str = "") -> Iterator[Sighting]:
        if isinstance(value, Mapping):
            for child_key, child in value.items():
                yield from self._in_json(child, f"{path}.{child_key}", str(child_key))
        elif isinstance(value, list):
            for index, child in enumerate(value):
                yield from self._in_json(child, f"{path}[{index}]", key)
        elif isinstance(value, str):
            hit = self._owner.get(value) or self._owner.get(value.lower())
            if hit is not None:
                yield Sighting(hit[0], hit[1], value, path)
            else:
                yield from (Sighting(s.owner, s.kind, s.value, path) for s in self._in_text(value))
        elif (
            isinstance(value, int)
            and not isinstance(value, bool)
            and _is_id_key(key, self._id_keys)
        ):
            hit = self._owner.get(str(value))
            if hit is not None:
                yield Sighting(hit[0], hit[1], str(value), path)
