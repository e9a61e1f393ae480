"""The isolation engine's pure parts: canaries found where they leak, breaches counted right."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from pytest_apex.isolation.accounting import EVENTS_PER_RUN, Ledger
from pytest_apex.isolation.canary import CANARY_PATTERN, CanaryBook, new_canary, redact_canary
from pytest_apex.isolation.scenario import ScenarioSpec, run_isolation_scenario
from tests.plugin.fake_users import FakeWorld, event, run_of


@pytest.fixture
def ledger() -> Ledger:
    book = CanaryBook()
    ledger = Ledger(book)
    for index in range(3):
        book.issue(index)
        ledger.add_user(index, f"uid-{index}", f"user{index}")
        ledger.add_thread(index, f"thread-{index}")
    return ledger


# --- canaries -----------------------------------------------------------------------------


def test_canaries_are_unique_and_match_their_pattern() -> None:
    tokens = {new_canary() for _ in range(1000)}
    assert len(tokens) == 1000
    assert all(CANARY_PATTERN.fullmatch(t) for t in tokens)
    assert "…" in redact_canary(next(iter(tokens)))
    assert len(redact_canary(next(iter(tokens)))) < len(next(iter(tokens)))


def test_a_book_issues_one_canary_per_user_and_knows_its_owner() -> None:
    book = CanaryBook()
    first = book.issue(0)
    assert book.issue(0) == first
    second = book.issue(1)
    assert first != second
    assert (book.owner_of(first), book.owner_of(second), len(book)) == (0, 1, 2)


def test_scanning_finds_other_users_canaries_anywhere_in_a_payload() -> None:
    book = CanaryBook()
    mine, theirs = book.issue(0), book.issue(1)
    payload = {"a": [{"deep": f"text {theirs} and {mine}"}], "b": f"again {theirs}"}
    assert [s.owner for s in book.sightings(payload)] == [1, 0]  # distinct, in order
    assert [s.owner for s in book.foreign(payload, viewer=0)] == [1]
    assert book.foreign({"only": mine}, viewer=0) == []
    assert book.foreign(f"raw {theirs}".encode(), viewer=0)[0].owner == 1


def test_an_unknown_canary_is_a_leak_of_unknown_owner() -> None:
    book = CanaryBook()
    book.issue(0)
    stranger = new_canary()  # a user of another run
    [sighting] = book.foreign([stranger], viewer=0)
    assert sighting.owner is None
    assert sighting.token == stranger


# --- accounting -----------------------------------------------------------------------------


def test_clean_runs_count_expected_events_and_no_breach(ledger: Ledger) -> None:
    canary = ledger.book.token_of(0)
    ledger.record_run(0, run_of("r1", "uid-0", f"request {canary}"))
    ledger.record_run(0, run_of("r2", "uid-0", f"request {canary}", complete=False))
    account = ledger.accounts[0]
    assert (account.runs_started, account.runs_completed) == (2, 1)
    assert account.events_expected == 2 * EVENTS_PER_RUN
    assert account.events_received == EVENTS_PER_RUN + 2
    assert ledger.breach_counts() == {"events": 0, "thread_lists": 0, "thread_access": 0}
    assert ledger.summary("events") == ""


def test_foreign_events_are_breaches_attributed_to_their_owner(ledger: Ledger) -> None:
    mine, theirs = ledger.book.token_of(0), ledger.book.token_of(1)
    run = run_of("r1", "uid-0", f"request {mine}")
    # shared_context: user 1's text arrives under user 0's id; broadcast: user 2's own event.
    run.foreign = [
        event("agent_thinking", "r9", "uid-0", f"request {theirs}"),
        event("agent_started", "r8", "uid-2", "no canary here"),
        event("agent_started", "r0", "uid-0", f"an earlier run of mine {mine}"),
    ]
    ledger.record_run(0, run)
    assert ledger.accounts[0].foreign_events == 3
    breaches = ledger.breaches
    assert [(b.kind, b.viewer, b.owner) for b in breaches] == [
        ("events", 0, 1),
        ("events", 0, 2),
    ]
    summary = ledger.summary("events")
    assert summary.startswith("2 breaches: 1 users saw data of 2 others")
    assert "user0 saw data of user1" in summary
    assert "user0 saw data of user2" in summary
    assert "apexcanary-" not in summary


def test_another_users_canary_inside_an_own_event_is_a_breach(ledger: Ledger) -> None:
    theirs = ledger.book.token_of(2)
    ledger.record_run(1, run_of("r1", "uid-1", f"mixed with {theirs}"))
    assert [(b.viewer, b.owner) for b in ledger.breaches] == [(1, 2)] * (EVENTS_PER_RUN)
    assert ledger.examples("events") == ["user1 saw data of user2 (their canary in run r1…)"]


def test_thread_lists_breach_on_foreign_ids_owners_or_canaries(ledger: Ledger) -> None:
    ledger.record_thread_list(0, [{"id": "thread-0", "user_id": "uid-0"}])
    assert ledger.breaches == []
    ledger.record_thread_list(
        0,
        [
            {"id": "thread-0", "user_id": "uid-0"},
            {"id": "thread-1", "user_id": "uid-1"},  # a known thread of user 1
            {"id": "x", "user_id": "uid-2"},  # someone else's by owner
            {"id": "y", "title": ledger.book.token_of(2)},  # by canary only
            {"id": "z", "user_id": "uid-from-elsewhere"},  # a user outside the run
        ],
    )
    assert [b.owner for b in ledger.breaches] == [1, 2, 2, None]
    assert ledger.accounts[0].probes_answered == 2
    assert "a user outside this run" in ledger.summary("thread_lists", limit=10)


def test_thread_access_refused_is_fine_anything_else_is_a_breach_or_an_error(
    ledger: Ledger,
) -> None:
    ledger.record_thread_access(0, 1, 404, {"detail": "not found"})
    ledger.record_thread_access(0, 1, 403, {})
    assert ledger.breaches == []
    ledger.record_thread_access(0, 1, 200, {"id": "thread-1", "title": ledger.book.token_of(1)})
    ledger.record_thread_access(0, 2, 404, {"title": ledger.book.token_of(2)})  # leaks anyway
    ledger.record_thread_access(0, 2, 500, {})
    assert [(b.kind, b.owner) for b in ledger.breaches] == [
        ("thread_access", 1),
        ("thread_access", 2),
    ]
    assert ledger.errors() == ["user0: GET another user's thread answered 500"]


# --- the scenario against in-memory users ------------------------------------------------------


def scenario(users: int, **world_flags: Any) -> Any:
    world = FakeWorld(users, **world_flags)
    spec = ScenarioSpec(users=users, runs_per_user=2, probes_per_user=2, deadline_s=30)
    result = asyncio.run(run_isolation_scenario(spec, world.make_users, world.run_agent))
    return result, world.state, world.sessions


def test_the_scenario_on_isolated_users_measures_everything_and_finds_nothing() -> None:
    result, world, _ = scenario(6)
    assert world["peak"] == 6  # the barrier released everyone together
    m = result.measurements()
    assert (m["simultaneous"], m["runs_expected"], m["runs_completed"]) == (6, 12, 12)
    assert (m["events_expected"], m["events_received"], m["foreign_events"]) == (60, 60, 0)
    assert result.ledger.breach_counts() == {"events": 0, "thread_lists": 0, "thread_access": 0}
    assert sum(a.probes_answered for a in result.ledger.accounts.values()) == 6 * 3
    assert m["p95_s"] == pytest.approx(1.5, rel=0.01)


def test_the_scenario_catches_unscoped_lists_and_idor() -> None:
    result, _, _ = scenario(4, unscoped=True, idor=True)
    counts = result.ledger.breach_counts()
    assert counts["thread_lists"] == 4 * 3  # everyone sees the 3 others' threads
    assert counts["thread_access"] == 4 * 2  # every probe opened a foreign thread
    assert counts["events"] == 0


def test_the_scenario_catches_events_delivered_to_the_wrong_user() -> None:
    result, _, _ = scenario(3, broadcast=True)
    breaches = [b for b in result.ledger.breaches if b.kind == "events"]
    assert breaches
    assert all(b.owner is not None and b.owner != b.viewer for b in breaches)
    assert result.runs_completed == 6  # the runs themselves were fine: only delivery leaked


def test_a_spec_refuses_a_run_that_could_not_show_anything() -> None:
    with pytest.raises(ValueError, match="at least 2 users"):
        ScenarioSpec(users=1)
    with pytest.raises(ValueError, match="runs_per_user"):
        ScenarioSpec(users=2, runs_per_user=0)


def test_probes_answered_500_are_sent_but_unanswered_never_clean() -> None:
    result, _, _ = scenario(4, server_errors=True)
    ledger = result.ledger
    lists, access = ledger.probes("thread_lists"), ledger.probes("thread_access")
    assert (lists.sent, lists.answered, len(lists.unanswered)) == (4, 0, 4)
    assert (access.sent, access.answered, len(access.unanswered)) == (8, 0, 8)
    assert ledger.breach_counts() == {"events": 0, "thread_lists": 0, "thread_access": 0}
    summary = ledger.probe_summary("thread_lists")
    assert summary.startswith("4 of 4 probes unanswered: 4 errors, e.g. user0 <user0@apex.test>: ")
    assert "listing threads raised ServerError: Server error '500" in summary
    assert ledger.probe_summary("thread_access").startswith("8 of 8 probes unanswered")
    assert "answered 500" in ledger.probe_summary("thread_access")
    m = result.measurements()
    assert (m["thread_access_probes_sent"], m["thread_access_probes_answered"]) == (8, 0)
    assert (m["thread_list_probes_sent"], m["thread_list_probes_answered"]) == (4, 0)


def test_a_probe_cut_off_by_the_deadline_counts_as_unanswered(ledger: Ledger) -> None:
    ledger.probe_sent(0, "thread_access")
    ledger.probe_sent(0, "thread_access")
    ledger.record_thread_access(0, 1, 404, {})
    tally = ledger.probes("thread_access")
    assert (tally.sent, tally.answered, tally.silent) == (2, 1, 1)
    assert ledger.probe_summary("thread_access") == (
        "1 of 2 probes unanswered: 1 still running at the deadline"
    )
    assert ledger.probe_summary("thread_lists") == ""


def test_a_user_the_app_failed_to_log_in_is_counted_and_the_others_run() -> None:
    world = FakeWorld(5)

    async def make_users(count: int) -> list[Any]:
        made: list[Any] = list(await world.make_users(count))
        made[2] = RuntimeError("sign-up answered 500: database is locked")
        return made

    spec = ScenarioSpec(users=5, runs_per_user=1, probes_per_user=1)
    result = asyncio.run(run_isolation_scenario(spec, make_users, world.run_agent))
    assert result.simultaneous == 4
    assert result.runs_completed == 4
    assert any(
        "1 of 5 users could not log in" in n and "database is locked" in n for n in result.notes
    )
