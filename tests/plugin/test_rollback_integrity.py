"""No row lost in a rollback: snapshots by owner and content, compared after the restore."""

from __future__ import annotations

import datetime as dt
import math

import pytest

from pytest_apex.rollback.integrity import Snapshot, TableShape, compare, digest

THREADS = TableShape("threads", key="id", owner="user_id", columns=("id", "user_id", "title"))
MESSAGES = TableShape("messages", key="id", owner="user_id", columns=("id", "user_id", "content"))


def _threads(*rows: tuple[int, str, str]) -> list[dict[str, object]]:
    return [{"id": i, "user_id": u, "title": t, "summary": None} for i, u, t in rows]


def test_every_row_kept_passes_both_checks() -> None:
    before = Snapshot.of(THREADS, _threads((1, "u1", "a"), (2, "u2", "b")))
    after = Snapshot.of(THREADS, _threads((1, "u1", "a"), (2, "u2", "b"), (3, "u1", "new")))
    lost, changed = compare(before, after).checks()
    assert (lost.observed, changed.observed) == (0, 0)
    assert lost.detail == "all 2 rows kept"


def test_a_column_only_the_candidate_knows_does_not_make_a_row_changed() -> None:
    before = Snapshot.of(THREADS, _threads((1, "u1", "a")))
    filled = [{"id": 1, "user_id": "u1", "title": "a", "summary": "written by v2"}]
    assert compare(before, Snapshot.of(THREADS, filled)).changed == ()


def test_lost_rows_are_named_by_table_and_owner() -> None:
    before = Snapshot.of(THREADS, _threads((1, "u1", "a"), (2, "u2", "b"), (3, "u2", "c")))
    before.add(MESSAGES, [{"id": 9, "user_id": "u3", "content": "hi"}])
    after = Snapshot.of(THREADS, _threads((1, "u1", "a")))
    lost, _ = compare(before, after).checks()
    assert lost.observed == 3
    assert lost.detail == ("3 of 4 rows lost: threads 2 (owners u2 x2), messages 1 (owners u3 x1)")


def test_a_value_the_old_release_reads_that_differs_is_changed() -> None:
    before = Snapshot.of(THREADS, _threads((1, "u1", "a")))
    after = Snapshot.of(THREADS, _threads((1, "u1", "rewritten")))
    _, changed = compare(before, after).checks()
    assert changed.observed == 1
    assert "threads 1 (owners u1 x1)" in changed.detail


def test_rows_written_during_the_candidate_join_the_expected_ones() -> None:
    before = Snapshot.of(THREADS, _threads((1, "u1", "a")))
    during = Snapshot.of(THREADS, _threads((2, "u2", "during v2")))
    expected = before.merged(during)
    assert expected.by_owner() == {"u1": 1, "u2": 1}
    assert len(compare(expected, before).lost) == 1


def test_a_drill_that_wrote_nothing_is_inconclusive() -> None:
    lost, changed = compare(Snapshot(), Snapshot()).checks()
    assert math.isnan(lost.observed)
    assert "proves nothing" in lost.inconclusive
    assert changed.inconclusive


def test_the_digest_is_canonical_and_names_a_missing_column() -> None:
    when = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    assert digest({"b": 1, "a": when}, ("a", "b")) == digest({"a": when, "b": 1}, ("b", "a"))
    with pytest.raises(KeyError, match="no column title"):
        digest({"id": 1}, ("id", "title"))
