"""Every form of a user's data the isolation suite recognises, and where it turns up.

A leak rarely carries a whole canary: a preview truncates it, a serializer nests or escapes
it, an error message quotes another user's id. So each user's *identities* are known here —
their canaries (one per item), user id, user name or e-mail, and the id of everything they
created or ran (threads, messages, runs) — and anything another user received is searched
for all of them:

- every token of the characters ids are made of (UUIDs, e-mail addresses, slugs, canaries,
  also a canary truncated to its user part: ``apexcanary-`` + 8 hex digits), found
  anywhere in the text, inside sentences too, and looked up;
- whole JSON string values, for identities no token can hold (a name with spaces);
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
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal
from urllib.parse import unquote

from pytest_apex.isolation.canary import CANARY_PREFIX, USER_HEX

IdentityKind = Literal["canary", "user_id", "username", "item_id", "run_id"]
# One identity as it travels between the shares of a run spread over machines:
# (owner, value, kind, label).
Identity = tuple[int, str, IdentityKind, str]

# The user part of a canary (32 bits) names its owner among thousands of users without
# chance collisions, so a canary cut down to it still counts.
CANARY_PREFIX_HEX: Final = USER_HEX
_CANARY: Final = re.compile(re.escape(CANARY_PREFIX) + "([0-9a-f]{8,16})")
# A run of the characters ids, UUIDs, e-mail addresses and canaries are made of.
_TOKEN: Final = re.compile(r"[a-z0-9_][a-z0-9_.%+@-]*")
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
        # Numeric ids count only under id-like keys (a total of 42 is no user's item 42).
        self._numeric: dict[str, tuple[int, IdentityKind, str]] = {}
        self._untokened = False  # some identity is no token: look at whole string values

    def add(self, owner: int, value: object, kind: IdentityKind, label: str = "") -> None:
        text = str(value).lower()
        if not text:
            return
        if text.isdigit():
            self._numeric.setdefault(text, (owner, kind, label))
            return
        self._owner.setdefault(text, (owner, kind, label))
        if _TOKEN.fullmatch(text) is None:
            self._untokened = True
        if kind == "canary" and text.startswith(CANARY_PREFIX):
            self._canary_part.setdefault(text[len(CANARY_PREFIX) :][:USER_HEX], owner)

    def add_all(self, identities: Iterable[Identity]) -> None:
        """Identities another share of the run issued (`add` each; known ones are kept)."""
        for owner, value, kind, label in identities:
            self.add(owner, value, kind, label)

    def owner_of(self, value: object) -> int | None:
        """Whose identity `value` is; a canary cut down to its user part still says."""
        text = str(value).lower()
        found = self._owner.get(text) or self._numeric.get(text)
        if found is not None:
            return found[0]
        if match := _CANARY.match(text):
            return self._canary_part.get(match.group(1)[:USER_HEX])
        return None

    def __len__(self) -> int:
        return len(self._owner) + len(self._numeric)

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
        owners = self._owner
        # Every token that could be an identity (ids, UUIDs, e-mails, canaries) in one pass,
        # each looked up: one regex and a dict lookup per token, whatever the number of users.
        for token in _TOKEN.findall(form):
            if token.endswith("."):  # the end of a sentence quoting an address or an id
                token = token.rstrip(".")
            entry = owners.get(token)
            if entry is not None:
                if entry[0] != viewer:
                    found.setdefault(token, (entry[0], entry[1], entry[2], token))
            elif token.startswith(CANARY_PREFIX):
                self._truncated_canary(token, viewer, found)
        if self._untokened:
            # Identities a token cannot hold (a user name with spaces): exact string values.
            for value in _JSON_STRING.findall(form):
                entry = owners.get(value)
                if entry is not None and entry[0] != viewer:
                    found.setdefault(value, (entry[0], entry[1], entry[2], value))
        if self._numeric:
            for key, number in _NUMERIC_ID.findall(form):
                entry = self._numeric.get(number)
                if entry is not None and entry[0] != viewer and _is_id_key(key, self._id_keys):
                    found.setdefault(number, (entry[0], entry[1], entry[2], number))

    def _truncated_canary(
        self,
        token: str,
        viewer: int | None,
        found: dict[str, tuple[int | None, IdentityKind, str, str]],
    ) -> None:
        match = _CANARY.match(token)
        if match is None:
            return
        owner = self._canary_part.get(match.group(1)[:USER_HEX])
        if owner is None or owner != viewer:
            # A truncated canary of another user, or a canary of nobody here.
            found.setdefault(match.group(0), (owner, "canary", "truncated" if owner else "", token))

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
