"""Every form of a user's data the isolation suite recognises, and where it turns up.

A leak rarely carries a whole canary: a preview truncates it, a serializer nests or escapes
it, an error message quotes another user's id. So each user's *identities* are known here —
their canaries (one per item), user id, user name or e-mail, and the id of everything they
created or ran (threads, messages, runs) — and anything another user received is searched
for all of them:

- canaries, also truncated to the user part (``apexcanary-`` + 8 hex digits), UUIDs and
  e-mail addresses, found by pattern anywhere in the text;
- every JSON string value, looked up as it is (ids of any shape, user names);
- numbers under id-like keys (``"id": 42``, ``"owner_id": 7``; a bare number elsewhere, such
  as a total, would match numeric ids by chance);
- in each form the text may have been re-encoded to: upper or mixed case, URL escaping
  (``%40``), JSON ``\\u`` escaping.

Matching is by pattern and lookup on the raw text, not by parsing and walking every payload
or searching for every identity in it: the cost of a scan grows with the size of what was
received, not with the number of users. Only a hit is located (its JSON path), which is rare.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal
from urllib.parse import unquote

from pytest_apex.isolation.canary import CANARY_PREFIX, USER_HEX

IdentityKind = Literal["canary", "user_id", "username", "item_id", "run_id"]

# The user part of a canary (32 bits) names its owner among thousands of users without
# chance collisions, so a canary cut down to it still counts.
CANARY_PREFIX_HEX: Final = USER_HEX
_CANARY: Final = re.compile(re.escape(CANARY_PREFIX) + "([0-9a-f]{8,16})")
_UUID: Final = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_EMAIL: Final = re.compile(r"[a-z0-9._%+-]+@[a-z0-9.-]+\.[a-z]{2,}")
_JSON_STRING: Final = re.compile(r'"([^"\\]{1,200})"')
_NUMERIC_ID: Final = re.compile(r'"([a-z0-9_]{1,64})"\s*:\s*(\d{1,19})\b')
# One backslash in a JSON document, more where JSON was embedded in JSON (a string field
# holding a serialised event).
_JSON_ESCAPE: Final = re.compile(r"\\{1,8}u([0-9a-f]{4})")


@dataclass(frozen=True)
class Sighting:
    """An identity found in what a user received: whose, which kind, and where."""

    owner: int | None  # None: a canary of nobody in this run
    kind: IdentityKind
    value: str
    where: str  # JSON path, or "text" when the payload is no JSON
    label: str = ""  # which of the owner's items ("thread 1", "run 2 request")

    def describe(self) -> str:
        # A canary is never repeated in a message (a report must not hand it on); naming
        # whose item it marks says all a reader needs.
        if self.kind == "canary":
            shown = f"their canary ({self.label})" if self.label else "their canary"
        else:
            shown = f"{self.kind} {self.value}" + (f" ({self.label})" if self.label else "")
        return f"{shown} at {self.where}"


def _is_id_key(key: str, id_keys: frozenset[str]) -> bool:
    if not key:
        return False
    lowered = key.lower()
    return lowered in id_keys or lowered == "id" or lowered.endswith(("_id", "id"))


def encodings(text: str) -> Iterator[str]:
    """`text` in every form the scan looks at: lower-cased, URL-unescaped, JSON-unescaped."""
    low = text.lower()
    yield low
    if "%" in low:
        unescaped = unquote(low)
        if unescaped != low:
            yield unescaped
    if "\\" in low:
        decoded = _JSON_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), low).replace("\\/", "/")
        if decoded != low:
            yield decoded.lower()


class IdentityBook:
    """Which user each identity belongs to; scans what users received for others' ones."""

    def __init__(self, id_keys: frozenset[str] = frozenset()) -> None:
        self._owner: dict[str, tuple[int, IdentityKind, str]] = {}
        self._canary_part: dict[str, int] = {}
        self._id_keys = frozenset(k.lower() for k in id_keys)
        self._numeric_ids = False  # only worth looking for once some id is a number

    def add(self, owner: int, value: object, kind: IdentityKind, label: str = "") -> None:
        text = str(value).lower()
        if not text:
            return
        self._owner.setdefault(text, (owner, kind, label))
        self._numeric_ids = self._numeric_ids or text.isdigit()
        if kind == "canary" and text.startswith(CANARY_PREFIX):
            self._canary_part.setdefault(text[len(CANARY_PREFIX) :][:USER_HEX], owner)

    def owner_of(self, value: object) -> int | None:
        found = self._owner.get(str(value).lower())
        return found[0] if found else None

    def __len__(self) -> int:
        return len(self._owner)

    # --- scanning -----------------------------------------------------------------------

    def scan(
        self, text: str, viewer: int | None = None, echoed: Collection[str] = ()
    ) -> list[Sighting]:
        """The identities in `text` that are not `viewer`'s own (all of them for None).

        `echoed` holds values the viewer itself sent with the request (an id it probed):
        the app quoting them back is no leak. Each identity is reported once per text.
        """
        if not text:
            return []
        found: dict[str, tuple[int | None, IdentityKind, str, str]] = {}
        for form in encodings(text):
            self._scan_form(form, viewer, found)
        if not found:
            return []
        echoes = {e.lower() for e in echoed}
        sightings = []
        for value, (owner, kind, label, raw) in found.items():
            if value in echoes or any(value in e for e in echoes):
                continue
            sightings.append(Sighting(owner, kind, raw, locate(text, value), label))
        return sightings

    def _scan_form(
        self,
        form: str,
        viewer: int | None,
        found: dict[str, tuple[int | None, IdentityKind, str, str]],
    ) -> None:
        def hit(value: str) -> None:
            entry = self._owner.get(value)
            if entry is not None and entry[0] != viewer:
                found.setdefault(value, (entry[0], entry[1], entry[2], value))

        if CANARY_PREFIX in form:
            for match in _CANARY.finditer(form):
                token = match.group(0)
                entry = self._owner.get(token)
                if entry is not None:
                    hit(token)
                    continue
                owner = self._canary_part.get(match.group(1)[:USER_HEX])
                if owner != viewer or owner is None:
                    # A truncated canary of another user, or a canary of nobody here.
                    found.setdefault(token, (owner, "canary", "truncated" if owner else "", token))
        for match in _JSON_STRING.finditer(form):
            hit(match.group(1))
        for match in _UUID.finditer(form):
            hit(match.group(0))
        if "@" in form:
            for match in _EMAIL.finditer(form):
                hit(match.group(0))
        if self._numeric_ids:
            for match in _NUMERIC_ID.finditer(form):
                if _is_id_key(match.group(1), self._id_keys):
                    hit(match.group(2))

    def sightings(self, body: Any, text: str = "") -> list[Sighting]:
        """Every identity in a payload: `text` raw, else `body` (any JSON value) as JSON."""
        return self.scan(text or _as_text(body))

    def foreign(self, body: Any, text: str, viewer: int) -> list[Sighting]:
        """The identities in a payload that are not `viewer`'s own: each one is a leak."""
        return self.scan(text or _as_text(body), viewer)


def _as_text(body: Any) -> str:
    if body is None:
        return ""
    if isinstance(body, str):
        return json.dumps(body)
    return json.dumps(body, default=str)


def locate(text: str, value: str) -> str:
    """Where `value` (lower-cased) sits in `text`: the JSON path of the first string or
    number holding it, else ``"text"``. Only called for hits, so parsing here is cheap."""
    try:
        document = json.loads(text)
    except ValueError:
        return "text"
    return next(_paths(document, value, "$"), "text")


def _paths(node: Any, value: str, path: str) -> Iterator[str]:
    if isinstance(node, Mapping):
        for key, child in node.items():
            yield from _paths(child, value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, child in enumerate(node):
            yield from _paths(child, value, f"{path}[{index}]")
    elif isinstance(node, str | int) and not isinstance(node, bool):
        shown = str(node).lower()
        if value in shown or any(value in form for form in encodings(shown)):
            yield path
