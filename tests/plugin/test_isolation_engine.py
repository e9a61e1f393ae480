"""The isolation engine on its own: canaries, identities in every form, the inbox and its
scan, detection power, roles, cleanup, and the streaming scenario against an in-process app
with bugs of every kind the engine has to catch without being told about them."""

from __future__ import annotations

import asyncio
import json
import math
import random
from typing import Any

import pytest

from pytest_apex.criteria import Criterion
from pytest_apex.isolation.agent_scenario import (
    AgentPublished,
    AgentScenarioSpec,
    AgentShare,
    run_agent_isolation,
    run_agent_shares,
)
from pytest_apex.isolation.canary import CANARY_PATTERN, CanaryBook, new_canary, redact_canary
from pytest_apex.isolation.cleanup import wait_for_rest
from pytest_apex.isolation.identities import IdentityBook
from pytest_apex.isolation.inbox import BETWEEN, DRAIN, IN_RUN, Inbox, Received
from pytest_apex.isolation.power import describe, detectable_rate, one_in
from pytest_apex.isolation.roles import Adversity, assign, pairings
from pytest_apex.isolation.shares import ShareLost, share_indices
from pytest_apex.settings import Thresholds
from pytest_apex.suites.isolation_checks import agent_checks
from tests.plugin.fake_stream import fake_world

# --- canaries -------------------------------------------------------------------------------


def test_canaries_are_unique_per_user_and_item_and_name_their_owner_when_truncated() -> None:
    book = CanaryBook()
    alice, bob = book.issue(0), book.issue(1)
    thread = book.item(0, "thread")
    assert CANARY_PATTERN.fullmatch(alice)
    assert CANARY_PATTERN.fullmatch(thread)
    assert len({alice, bob, thread}) == 3
    assert thread[:19] == alice[:19]  # the user part comes first: previews keep it
    assert book.owner_of(thread[:19]) == 0
    assert book.owner_of(bob) == 1
    assert book.label_of(thread) == "thread"
    assert book.issue(0) == alice
    assert redact_canary(new_canary()).endswith("…")


# --- identities -----------------------------------------------------------------------------


def _book() -> tuple[IdentityBook, CanaryBook]:
    canaries = CanaryBook()
    book = IdentityBook()
    for user in (0, 1):
        book.add(user, canaries.issue(user), "canary", "the user")
        book.add(user, f"4{user}aaaaaa-0000-4000-8000-00000000000{user}", "user_id")
        book.add(user, f"user{user}@example.test", "username")
    return book, canaries


@pytest.mark.parametrize(
    "form",
    [
        lambda c, _u, _e: c,  # whole
        lambda c, _u, _e: c[:19] + "…",  # truncated to the user part
        lambda c, _u, _e: c.upper(),  # re-cased
        lambda c, _u, _e: c.replace("-", "%2D"),  # URL-escaped
        lambda c, _u, _e: c.replace("-", "\\u002d"),  # JSON-escaped
        lambda _c, u, _e: f"owner {u}",  # another user's id in a sentence
        lambda _c, _u, e: e.replace("@", "%40"),  # their e-mail, URL-escaped
    ],
)
def test_another_users_data_is_recognised_in_every_form(form: Any) -> None:
    book, canaries = _book()
    text = json.dumps({"nested": {"preview": "x"}}).replace(
        '"x"',
        json.dumps(
            form(canaries.issue(1), "41aaaaaa-0000-4000-8000-000000000001", "user1@example.test")
        ),
    )
    seen = book.scan(text, viewer=0)
    assert [s.owner for s in seen] == [1], (text, seen)
    assert seen[0].where == "$.nested.preview"
    assert book.scan(text, viewer=1) == []  # the owner's own data is no leak


def test_numbers_count_only_under_id_keys_and_echoed_values_are_not_leaks() -> None:
    book = IdentityBook()
    book.add(1, 42, "item_id")
    assert [s.kind for s in book.scan('{"owner_id": 42}', viewer=0)] == ["item_id"]
    assert book.scan('{"total": 42}', viewer=0) == []
    url = "http://app/api/items/42"
    assert book.scan('{"detail": "item 42 not found", "id": 42}', 0, echoed=(url,)) == []


# --- the inbox and its scan -----------------------------------------------------------------


def test_the_scan_names_viewer_owner_channel_frame_and_phase() -> None:
    book, canaries = _book()
    inbox = Inbox()
    inbox.add(
        Received(
            0,
            "socket",
            1.0,
            json.dumps({"type": "heartbeat"}),
            "socket 1, frame 1",
            "heartbeat",
            BETWEEN,
        )
    )
    leak = json.dumps({"type": "run_summary", "payload": {"summary": canaries.issue(1)[:24]}})
    inbox.add(Received(0, "socket", 2.5, leak, "socket 1, frame 2", "run_summary", DRAIN))
    inbox.add(
        Received(
            1, "rest", 3.0, json.dumps([{"t": canaries.issue(1)}]), "GET /x [200]", "list", IN_RUN
        )
    )
    result = inbox.scan(book)
    assert result.checked == {"socket": 2, "rest": 1}
    assert len(result.leaks) == 1
    assert result.late_leaks == result.leaks
    words = result.leaks[0].describe({0: "user0", 1: "user1"})
    assert "user0 received data of user1" in words
    assert "socket 1, frame 2" in words
    assert "run_summary" in words
    assert "drain" in words
    assert "apexcanary-" not in words  # a report never hands a canary on
    assert result.matrix() == {(0, 1): 1}


# --- detection power ------------------------------------------------------------------------


def test_detection_power_follows_the_rule_of_three() -> None:
    assert math.isnan(detectable_rate(0))
    assert detectable_rate(1) == pytest.approx(0.95)
    assert detectable_rate(30_000) == pytest.approx(3 / 30_000, rel=0.01)
    assert one_in(detectable_rate(2_000)) == 668
    assert "1 of 668" in describe(2_000)


# --- roles ----------------------------------------------------------------------------------


def test_roles_are_seeded_every_path_is_taken_and_most_users_stay_calm() -> None:
    users = list(range(30))
    first = assign(users, Adversity(), random.Random(7))
    assert first == assign(users, Adversity(), random.Random(7))
    counts = {role: list(first.values()).count(role) for role in set(first.values())}
    assert counts["cancel"] == 6
    assert counts["reconnect"] == 4
    assert counts["fail"] == 3
    assert counts["rate_limit"] == 1
    assert counts["calm"] == 16
    assert set(assign(users, None, random.Random(7)).values()) == {"calm"}
    pairs = pairings(users, 2, random.Random(3))
    assert all(len(p) == 2 and u not in p for u, p in pairs.items())
    with pytest.raises(ValueError, match="calm"):
        Adversity(cancel=0.5, reconnect=0.5)


# --- cleanup --------------------------------------------------------------------------------


def test_cleanup_waits_for_the_baseline_and_reports_what_stayed() -> None:
    readings = iter([{"live": 5.0}, {"live": 1.0}, {"live": 0.0}, {"live": 0.0}])

    async def read() -> dict[str, float]:
        return next(readings, {"live": 0.0})

    done = asyncio.run(wait_for_rest(read, {"live": 0.0}, 5, interval_s=0.001))
    assert not math.isnan(done.seconds)

    async def stuck() -> dict[str, float]:
        return {"live": 3.0}

    never = asyncio.run(wait_for_rest(stuck, {"live": 0.0}, 0.05, interval_s=0.01))
    assert math.isnan(never.seconds)
    assert never.stuck == {"live": 3.0}


# --- the scenario against an in-process app -------------------------------------------------

SPEC = {
    "users": 12,
    "rounds": 3,
    "seed": 5,
    "drain_s": 0.1,
    "run_timeout_s": 5,
    "cleanup_timeout_s": 2,
}
THRESHOLDS = Thresholds(
    {
        "concurrent_users_min": 12,
        "isolation_detectable_leak_rate_max": 0.05,
        "isolation_cleanup_s_max": 2,
    }
)


def _run(
    bugs: frozenset[str] = frozenset(), shares: int = 0, lose: int | None = None, **spec: Any
) -> tuple[Any, dict[str, Any]]:
    """The scenario in one process, or its users dealt over `shares` shares (share `lose`
    lost during the first round's finish)."""
    _app, make_user, gauges = fake_world(bugs)
    scenario = AgentScenarioSpec(
        **{**SPEC, **spec}, sockets_per_user_limit=3, rate_limit_per_minute=100
    )
    if not shares:
        result = asyncio.run(run_agent_isolation(scenario, make_user, gauges))
    else:
        parts = [
            (_Lost if number == lose else AgentShare)(scenario, indices, make_user, number)
            for number, indices in enumerate(share_indices(scenario.users, shares))
        ]
        result = asyncio.run(run_agent_shares(scenario, parts, gauges))
    checks = {c.name: c for c in agent_checks(result, THRESHOLDS, spec.get("users", 12))}
    return result, checks


class _Lost(AgentShare):
    async def finish_round(self, *args: Any) -> AgentPublished:
        raise ShareLost("isolation share 1 on node 10.0.0.7 died during finish_round: gone")


def _failed(checks: dict[str, Any]) -> set[str]:
    """Criteria that did not pass (failed or inconclusive), judged as the recorder would."""
    return {
        name
        for name, c in checks.items()
        if Criterion(
            "isolation",
            name,
            c.observed,
            c.threshold,
            c.op,
            samples=c.samples,
            min_samples=c.min_samples,
            inconclusive=c.inconclusive,
        ).outcome
        != "pass"
    }


def test_a_clean_app_passes_every_criterion_and_every_path_was_taken() -> None:
    result, checks = _run()
    assert _failed(checks) == set(), {
        n: (c.observed, c.detail, c.inconclusive) for n, c in checks.items()
    }
    roles = {r.role for r in result.runs}
    assert roles == {"calm", "cancel", "reconnect", "fail", "rate_limit"}
    assert result.scan.checked["socket"] > 100
    assert result.scan.checked["rest"] > 50
    assert result.sockets_refused >= 1  # the socket past the cap was closed by the app
    assert {r.outcome for r in result.runs if r.role == "fail"} == {"failed"}
    assert result.peak_runs_in_flight >= 12 * 2  # the burst round


@pytest.mark.parametrize(
    ("bug", "must_fail"),
    [
        ("late_summary", {"late_foreign_frames", "cross_user_identities"}),
        ("error_echo", {"cross_user_events"}),
        ("broadcast", {"cross_user_events", "cross_user_identities"}),
        ("list_leak", {"cross_user_rest"}),
        ("serve_probes", {"cross_user_access"}),
        ("identity_in_error", {"cross_user_identities"}),
    ],
)
def test_each_kind_of_leak_fails_its_criterion(bug: str, must_fail: set[str]) -> None:
    _result, checks = _run(frozenset({bug}))
    failed = _failed(checks)
    assert must_fail <= failed, (bug, {n: checks[n].detail for n in failed})
    for name in must_fail - {"cross_user_access"}:
        assert "saw data of" in checks[name].detail, checks[name].detail


def test_the_seed_makes_the_run_reproducible() -> None:
    first, _ = _run(seed=11)
    second, _ = _run(seed=11)
    assert [(r.user, r.round, r.role) for r in first.runs] == [
        (r.user, r.round, r.role) for r in second.runs
    ]


def test_each_adversity_round_draws_users_who_were_calm_in_the_last_one() -> None:
    users = list(range(12))
    rng = random.Random(5)
    first = assign(users, Adversity(), rng)
    second = assign(users, Adversity(), rng, previous=first)
    took_a_path = {u for u, role in first.items() if role != "calm"}
    assert took_a_path  # 5 of the 12
    assert not took_a_path & {u for u, role in second.items() if role != "calm"}


# --- users dealt over shares (a run spread over machines, one share per machine) ---------


def test_users_dealt_over_shares_pass_as_in_one_process_and_probe_across_shares() -> None:
    result, checks = _run(shares=3)
    assert _failed(checks) == set(), {
        n: (c.observed, c.detail, c.inconclusive) for n, c in checks.items()
    }
    assert result.simultaneous == 12
    across = [p for p in result.probes if p.viewer % 3 != p.owner % 3]
    assert across
    assert all(p.outcome == "refused" for p in result.probes)


@pytest.mark.parametrize(
    ("bug", "criterion"),
    [("broadcast", "cross_user_events"), ("list_leak", "cross_user_rest")],
)
def test_a_leak_between_users_of_different_shares_is_caught_and_attributed(
    bug: str, criterion: str
) -> None:
    result, checks = _run(frozenset({bug}), shares=3)
    assert criterion in _failed(checks)
    across = [
        leak
        for leak in result.scan.leaks
        if leak.owner is not None and leak.viewer % 3 != leak.owner % 3
    ]
    assert across, checks[criterion].detail
    assert "saw data of" in checks[criterion].detail


def test_a_share_lost_mid_run_leaves_nothing_passed() -> None:
    result, checks = _run(shares=3, lose=1)
    assert result.lost == ["isolation share 1 on node 10.0.0.7 died during finish_round: gone"]
    assert set(result.labels) == {u for u in range(12) if u % 3 != 1}
    passed = {name for name, c in checks.items() if name not in _failed(checks)}
    assert passed == set()
    assert "node 10.0.0.7" in checks["concurrent_users"].inconclusive
