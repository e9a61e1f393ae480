"""REST isolation against an in-memory app: clean passes, each ownership bug is caught."""

from __future__ import annotations

import uuid

import httpx
import pytest

from pytest_apex.adapters.rest import RestAdapter
from pytest_apex.app import load_description
from pytest_apex.isolation.identities import IdentityBook
from pytest_apex.isolation.rest_scenario import (
    Published,
    RestBreach,
    RestScenarioResult,
    RestScenarioSpec,
    RestShare,
    plans_for,
    run_rest_isolation,
    run_shares,
)
from pytest_apex.isolation.shares import ShareLost, share_indices
from pytest_apex.settings import Thresholds
from pytest_apex.suites.isolation_checks import rest_checks
from tests.plugin.fake_rest_app import DESCRIPTION, FakeRestApp

USERS = 6


async def _run(
    app: FakeRestApp, users: int = USERS, fail_user: int | None = None, shares: int = 0
) -> RestScenarioResult:
    """The scenario in one process, or with its users dealt over `shares` shares (each one
    as a machine of a spread run would hold them, knowing only what the others publish)."""
    description = load_description(DESCRIPTION, "fake")
    adapter = RestAdapter(
        description, {"api": "http://api.test"}, transport=httpx.MockTransport(app)
    )
    run = uuid.uuid4().hex[:6]

    async def make_user(index: int):  # type: ignore[no-untyped-def]
        if index == fail_user:
            raise RuntimeError("sign-up answered 500: database is locked")
        return await adapter.login(f"user{index}-{run}")

    spec = RestScenarioSpec(users=users, resources=plans_for(description.resources), seed=7)
    try:
        if not shares:
            return await run_rest_isolation(spec, make_user)
        parts = [RestShare(spec, i, make_user) for i in share_indices(users, shares)]
        return await run_shares(spec, parts)
    finally:
        await adapter.aclose()


async def test_a_clean_app_shows_nobody_anyone_elses_data() -> None:
    result = await _run(FakeRestApp())
    assert result.users_ready == USERS
    assert result.breaches == []
    # The positive controls ran and held: own items listed and read back.
    assert result.own_expected_in_lists > 0
    assert result.own_listed == result.own_expected_in_lists
    assert result.own_reads > 0
    assert result.own_reads_ok == result.own_reads
    assert result.probes_sent > 0
    assert result.probes_refused == result.probes_sent
    assert result.answers_scanned > USERS * 10


@pytest.mark.parametrize(
    ("bug", "channel"),
    [
        ("idor", "probe"),
        ("list_leak", "list"),
        ("error_leak", "probe"),
        ("shared_cache", "probe"),
        ("notes_leak", "probe_sub_list"),
    ],
)
async def test_each_ownership_bug_is_caught_naming_viewer_and_owner(bug: str, channel: str) -> None:
    result = await _run(FakeRestApp(bug))
    assert result.breach_counts()[channel] > 0, result.breach_counts()
    described = result.describe_breaches([channel])
    assert " saw data of user" in described
    assert all(b.owner is not None and b.owner != b.viewer for b in result.breaches)


async def test_one_users_failed_sign_up_is_counted_and_the_others_go_on() -> None:
    result = await _run(FakeRestApp(), fail_user=2)
    assert result.users_ready == USERS - 1
    assert result.setup_errors["sign-up or login failed"] == 1
    assert "database is locked" in result.describe_errors()
    assert result.breaches == []


async def test_probes_that_error_are_unanswered_never_refused() -> None:
    app = FakeRestApp()
    original = app._notebook

    def failing(method, item_id, body, caller):  # type: ignore[no-untyped-def]
        owner = app.notebooks.get(item_id, {}).get("owner")
        if owner is not None and owner != caller:
            return httpx.Response(500, json={"error": "boom"})
        return original(method, item_id, body, caller)

    app._notebook = failing  # type: ignore[method-assign]
    result = await _run(app)
    assert result.probes_unanswered > 0
    assert result.probes_refused < result.probes_sent
    assert result.setup_errors["probe answered 500"] == result.probes_unanswered


def test_identities_are_recognised_truncated_nested_and_by_id_fields() -> None:
    book = IdentityBook(frozenset({"owner"}))
    book.add(1, "apexcanary-0123456789abcdef", "canary")
    book.add(1, "7d1f2c3a-0000-4000-8000-000000000001", "user_id")
    book.add(1, "alice@example.test", "username")
    book.add(1, 42, "item_id")
    body = {"preview": "apexcanary-01234567…", "meta": {"by": "ALICE@example.test"}, "owner": 42}
    kinds = {s.kind for s in book.foreign(body, "", viewer=2)}
    assert kinds == {"canary", "username", "item_id"}
    assert book.foreign({"total": 42}, "", viewer=2) == []  # a count is not an id
    text = "error: row 7d1f2c3a-0000-4000-8000-000000000001 locked"
    assert [s.kind for s in book.foreign(None, text, viewer=2)] == ["user_id"]
    assert book.foreign(body, "", viewer=1) == []


async def test_an_error_that_echoes_the_asked_id_is_no_leak() -> None:
    app = FakeRestApp()
    original = app._notebook

    def echoing(method, item_id, body, caller):  # type: ignore[no-untyped-def]
        answer = original(method, item_id, body, caller)
        if answer.status_code == 404:
            return httpx.Response(404, json={"detail": f"notebook {item_id} not found"})
        return answer

    app._notebook = echoing  # type: ignore[method-assign]
    result = await _run(app)
    assert result.probes_refused == result.probes_sent > 0
    assert result.breaches == []


# --- users dealt over shares (a run spread over machines, one share per machine) ---------


def _share_of(user: int, shares: int) -> int:
    return user % shares  # share_indices deals users like cards


async def test_users_dealt_over_shares_do_what_they_do_in_one_process() -> None:
    alone = await _run(FakeRestApp())
    spread = await _run(FakeRestApp(), shares=3)
    assert spread.users_ready == USERS
    assert spread.breaches == []
    assert spread.own_listed == spread.own_expected_in_lists == alone.own_expected_in_lists
    assert spread.own_reads_ok == spread.own_reads == alone.own_reads
    # The same seed draws the same number of probes: every user sees every other's targets.
    assert spread.probes_refused == spread.probes_sent == alone.probes_sent > 0
    assert set(spread.labels) == set(range(USERS))


@pytest.mark.parametrize(("bug", "channel"), [("list_leak", "list"), ("idor", "probe")])
async def test_a_leak_between_users_of_different_shares_is_caught_and_attributed(
    bug: str, channel: str
) -> None:
    result = await _run(FakeRestApp(bug), shares=2)
    across = [
        b
        for b in result.breaches
        if b.channel == channel
        and b.owner is not None
        and _share_of(b.viewer, 2) != _share_of(b.owner, 2)
    ]
    assert across, result.breach_counts()
    assert all(b.owner is not None for b in result.breaches)


class _OneOff:
    """A share that publishes nothing and saw one canary it could not attribute."""

    def __init__(self, spec: RestScenarioSpec, seen: str) -> None:
        self.result = RestScenarioResult(spec, users_ready=1)
        self.result.breaches.append(RestBreach("list", 5, None, "GET /notebooks", seen))

    async def setup(self) -> Published:
        return Published(users_ready=1)

    async def learn(self, published: object) -> None:
        return None

    async def write(self, round_no: int) -> Published:
        return Published()

    async def read(self) -> Published:
        return Published()

    async def outcome(self) -> RestScenarioResult:
        return self.result


async def test_a_sighting_a_share_could_not_attribute_is_resolved_against_the_whole_run() -> None:
    spec = RestScenarioSpec(users=2, resources=plans_for(_description().resources), rounds=1)
    canary = "apexcanary-0123456789abcdef"

    class Publisher(_OneOff):
        async def setup(self) -> Published:
            return Published(((0, canary, "canary", ""),), users_ready=1)

        async def outcome(self) -> RestScenarioResult:
            return RestScenarioResult(spec, users_ready=1)

    # Seen truncated to its user part: the whole run's book still knows whose it is.
    result = await run_shares(spec, [Publisher(spec, ""), _OneOff(spec, canary[:19])])
    assert [(b.viewer, b.owner) for b in result.breaches] == [(5, 0)]


class _Dies(RestShare):
    async def read(self) -> Published:
        raise ShareLost("isolation share 1 on node 10.0.0.7 died during read: ActorDiedError")


async def test_a_share_lost_mid_run_makes_every_criterion_that_held_inconclusive() -> None:
    description = _description()
    adapter = RestAdapter(
        description, {"api": "http://api.test"}, transport=httpx.MockTransport(FakeRestApp())
    )
    run = uuid.uuid4().hex[:6]

    async def make_user(index: int):  # type: ignore[no-untyped-def]
        return await adapter.login(f"user{index}-{run}")

    spec = RestScenarioSpec(users=USERS, resources=plans_for(description.resources), seed=7)
    first, second = share_indices(USERS, 2)
    try:
        result = await run_shares(
            spec, [RestShare(spec, first, make_user), _Dies(spec, second, make_user)]
        )
    finally:
        await adapter.aclose()
    assert result.lost == ["isolation share 1 on node 10.0.0.7 died during read: ActorDiedError"]
    assert result.users_ready == len(first)  # the lost share's outcome never came
    checks = {c.name: c for c in rest_checks(result, Thresholds.defaults(), USERS)}
    for name in ("cross_user_listings", "cross_user_reads", "cross_user_resource_access"):
        assert "node 10.0.0.7 died" in checks[name].inconclusive, name
    assert "node 10.0.0.7" in checks["concurrent_users"].inconclusive


def _description():  # type: ignore[no-untyped-def]
    return load_description(DESCRIPTION, "fake")
