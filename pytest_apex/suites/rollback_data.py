"""The drill's users and their rows, written and read back through the app's own API.

Every user writes the described resources (and one of each sub-resource under each) as a
user would, before the candidate, while it runs and after the rollback; each body carries
the user's canary, so a row read back names its owner by content as well as by its owner
field. Reading back is the owner's view: every row the user wrote must be returned to it,
and no row of another drill user may be.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from pytest_apex.adapters.base import ResourceSession
from pytest_apex.app.model import Resource
from pytest_apex.isolation.canary import new_canary
from pytest_apex.jsonpath import dig
from pytest_apex.recording import Check

EXAMPLES: Final = 3


@dataclass
class Written:
    """What one user wrote: (resource, id) pairs, and the ids the API refused to create."""

    user_id: str
    canary: str
    items: list[tuple[str, str]] = field(default_factory=list)
    parents: dict[str, str] = field(default_factory=dict)  # sub-resource item id -> parent id
    failures: list[str] = field(default_factory=list)


async def write(
    session: ResourceSession, resources: Sequence[Resource], written: Written, phase: str
) -> None:
    """One item of each resource and one of each sub-resource under it, for `phase`."""
    values = {"canary": f"{written.canary} {phase}"}
    for resource in resources:
        answer = await session.create(resource.name, values)
        item_id = _id(answer, resource)
        if not item_id:
            written.failures.append(f"{phase}: creating {resource.name} answered {_said(answer)}")
            continue
        written.items.append((resource.name, item_id))
        for sub in resource.sub_resources:
            answer = await session.create(sub.name, values, parent_id=item_id)
            sub_id = _id(answer, sub)
            if not sub_id:
                written.failures.append(f"{phase}: creating {sub.name} answered {_said(answer)}")
                continue
            written.items.append((sub.name, sub_id))
            written.parents[sub_id] = item_id


async def write_all(
    sessions: Sequence[ResourceSession],
    resources: Sequence[Resource],
    written: Sequence[Written],
    phase: str,
) -> None:
    await asyncio.gather(
        *(write(s, resources, w, phase) for s, w in zip(sessions, written, strict=True))
    )


def new_written(sessions: Sequence[ResourceSession]) -> list[Written]:
    return [Written(session.user_id, new_canary()) for session in sessions]


def write_check(written: Sequence[Written], phase: str) -> Check:
    """Every write of `phase` was accepted: the positive control of the drill's own data."""
    failures = [f for w in written for f in w.failures if f.startswith(f"{phase}:")]
    attempts = sum(1 for w in written for f in w.failures if f.startswith(f"{phase}:"))
    return Check(
        f"writes_{phase}",
        len(failures),
        0,
        "<=",
        detail="; ".join(failures[:EXAMPLES])
        or f"every write accepted ({sum(len(w.items) for w in written)} rows so far)",
        samples=sum(len(w.items) for w in written) + attempts,
        min_samples=1,
    )


@dataclass
class _Readback:
    """What one user's listings showed."""

    missing: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)
    unread: list[str] = field(default_factory=list)
    checked: int = 0


async def _read_back(
    session: ResourceSession,
    resources: Sequence[Resource],
    mine: Written,
    owners: dict[str, str],
    canaries: dict[str, str],
) -> _Readback:
    seen: set[str] = set()
    found = _Readback()

    async def listing(resource: Resource, parent_id: str = "") -> None:
        items, pages = await session.list_all(resource.name, parent_id=parent_id)
        if pages and not pages[-1].ok:
            found.unread.append(f"{session.username} listing {resource.name}: {_said(pages[-1])}")
        for item in items:
            found.checked += 1
            item_id = str(dig(item, resource.id_field) or "")
            seen.add(item_id)
            found.foreign.extend(_foreign(item, item_id, resource, mine, owners, canaries))

    for resource in resources:
        await listing(resource)
        parents = {parent for _, parent in mine.parents.items()}
        for sub in resource.sub_resources:
            await asyncio.gather(*(listing(sub, parent) for parent in sorted(parents)))
    found.missing = [f"{session.username}'s {n} {i}" for n, i in mine.items if i not in seen]
    return found


async def readback_checks(
    sessions: Sequence[ResourceSession],
    resources: Sequence[Resource],
    written: Sequence[Written],
) -> list[Check]:
    """Each user's own rows all returned to it; no other drill user's row returned to it."""
    owners = {item: w.user_id for w in written for item in (i for _, i in w.items)}
    canaries = {w.canary: w.user_id for w in written}
    views = await asyncio.gather(
        *(
            _read_back(session, resources, mine, owners, canaries)
            for session, mine in zip(sessions, written, strict=True)
        )
    )
    missing = [m for v in views for m in v.missing]
    foreign = [f for v in views for f in v.foreign]
    unread = [u for v in views for u in v.unread]
    checked = sum(v.checked for v in views)
    expected = sum(len(w.items) for w in written)
    broken = "; ".join(unread[:EXAMPLES])
    return [
        Check(
            "rows_returned_to_owner",
            math.nan if broken else expected - len(missing),
            expected,
            ">=",
            unit="rows",
            detail=f"{len(missing)} not returned: " + ", ".join(missing[:EXAMPLES])
            if missing
            else f"all {expected} rows returned to their owners",
            samples=expected,
            min_samples=1,
            inconclusive=f"a listing failed: {broken}" if broken else "",
        ),
        Check(
            "rows_returned_to_others",
            len(foreign),
            0,
            "<=",
            unit="rows",
            detail="; ".join(foreign[:EXAMPLES]) or f"none in {checked} items listed",
            samples=checked,
            min_samples=1,
        ),
    ]


def _foreign(
    item: Any,
    item_id: str,
    resource: Resource,
    mine: Written,
    owners: dict[str, str],
    canaries: dict[str, str],
) -> list[str]:
    """Why `item` is another drill user's (by its id, its owner field or its canary)."""
    reasons = []
    owner = owners.get(item_id)
    if owner is not None and owner != mine.user_id:
        reasons.append(f"{resource.name} {item_id} of user {owner} returned to {mine.user_id}")
    field_owner = str(dig(item, resource.owner_field) or "") if resource.owner_field else ""
    if field_owner and field_owner != mine.user_id and field_owner in owners.values():
        reasons.append(f"{resource.name} {item_id} says owner {field_owner}, to {mine.user_id}")
    text = str(item)
    for canary, user in canaries.items():
        if user != mine.user_id and canary in text:
            reasons.append(f"{resource.name} {item_id} carries the canary of user {user}")
    return reasons


def _id(answer: Any, resource: Resource) -> str:
    if not getattr(answer, "ok", False):
        return ""
    found = dig(answer.body, resource.id_field)
    return "" if found is None else str(found)


def _said(answer: Any) -> str:
    status = getattr(answer, "status", "?")
    body = str(getattr(answer, "body", ""))[:120]
    return f"{status} {body}".strip()
