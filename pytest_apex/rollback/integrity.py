"""Proof that a rollback lost no data: every row, before and after, by owner and by content.

Rollout controllers judge a release by its metrics and never look at the data afterwards
(reference §4): a canary that migrated the schema and was rolled back can leave rows behind
that the old release no longer reads, and nothing notices. Here the drill takes a `Snapshot`
of the rows it cares about before the candidate, another of the rows written while the
candidate ran, and compares both with what the restored release holds.

A row is its table, its key, its owner and a digest of the columns the *old* release knows:
a column the candidate added (an expand migration) is not part of the digest, so a row the
candidate also filled in is not "changed", while a value the old release reads that differs
is. A row missing after the rollback is *lost*, and the loss is told by table and by owner,
so a failure names whose data went. A snapshot of nothing proves nothing: comparing an empty
"before" is inconclusive, never a pass.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from pytest_apex.recording import Check

EXAMPLES: Final = 3


@dataclass(frozen=True)
class Row:
    """One row as the snapshot saw it."""

    table: str
    key: str
    owner: str
    digest: str


def digest(row: Mapping[str, Any], columns: Sequence[str]) -> str:
    """SHA-256 of the named columns' values, in a canonical form (sorted keys, text for
    anything JSON cannot hold, such as timestamps and UUIDs)."""
    missing = [c for c in columns if c not in row]
    if missing:
        raise KeyError(f"the row has no column {', '.join(missing)} (has {', '.join(row)})")
    canonical = json.dumps({c: row[c] for c in columns}, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class TableShape:
    """How to read one table's rows: its key column, its owner column and the columns whose
    values must survive (those the release rolled back to reads)."""

    name: str
    key: str
    owner: str
    columns: tuple[str, ...]


@dataclass
class Snapshot:
    """Rows by (table, key)."""

    rows: dict[tuple[str, str], Row] = field(default_factory=dict)

    @classmethod
    def of(cls, shape: TableShape, rows: Iterable[Mapping[str, Any]]) -> Snapshot:
        snapshot = cls()
        snapshot.add(shape, rows)
        return snapshot

    def add(self, shape: TableShape, rows: Iterable[Mapping[str, Any]]) -> None:
        for row in rows:
            key = str(row[shape.key])
            self.rows[(shape.name, key)] = Row(
                shape.name, key, str(row[shape.owner]), digest(row, shape.columns)
            )

    def merged(self, other: Snapshot) -> Snapshot:
        """This snapshot and `other` (rows written later win: the same key, newer content)."""
        return Snapshot({**self.rows, **other.rows})

    def by_owner(self) -> Counter[str]:
        return Counter(row.owner for row in self.rows.values())


@dataclass(frozen=True)
class Comparison:
    """What the restored release holds of the rows the drill expected."""

    expected: int
    lost: tuple[Row, ...]
    changed: tuple[Row, ...]

    def checks(self) -> list[Check]:
        """``rows_lost`` and ``rows_changed`` (both must be 0), each naming whose rows."""
        nothing = "no rows were written before the rollback: a drill that wrote none proves nothing"
        inconclusive = nothing if self.expected == 0 else ""
        observed_lost = math.nan if inconclusive else float(len(self.lost))
        observed_changed = math.nan if inconclusive else float(len(self.changed))
        return [
            Check(
                "rows_lost",
                observed_lost,
                0,
                "<=",
                detail=_describe("lost", self.lost, self.expected),
                samples=self.expected,
                inconclusive=inconclusive,
            ),
            Check(
                "rows_changed",
                observed_changed,
                0,
                "<=",
                detail=_describe("changed", self.changed, self.expected),
                samples=self.expected,
                inconclusive=inconclusive,
            ),
        ]


def compare(expected: Snapshot, restored: Snapshot) -> Comparison:
    """Every expected row must be in `restored` with the same digest; rows `restored` holds
    beyond them (written after the rollback) are not a loss."""
    lost: list[Row] = []
    changed: list[Row] = []
    for key, row in expected.rows.items():
        now = restored.rows.get(key)
        if now is None:
            lost.append(row)
        elif now.digest != row.digest:
            changed.append(row)
    return Comparison(len(expected.rows), tuple(lost), tuple(changed))


def _describe(what: str, rows: Sequence[Row], expected: int) -> str:
    """``3 of 120 rows lost: threads 2 (owners u7 x2), messages 1 (owners u3 x1)``."""
    if not rows:
        return f"all {expected} rows kept" if what == "lost" else f"none of {expected} changed"
    parts = []
    for table, count in Counter(row.table for row in rows).most_common():
        owners = Counter(row.owner for row in rows if row.table == table)
        named = ", ".join(f"{owner} x{n}" for owner, n in owners.most_common(EXAMPLES))
        more = f" and {len(owners) - EXAMPLES} more" if len(owners) > EXAMPLES else ""
        parts.append(f"{table} {count} (owners {named}{more})")
    return f"{len(rows)} of {expected} rows {what}: " + ", ".join(parts)
