"""REST isolation against an in-memory app: clean passes, each ownership bug is caught."""

from __future__ import annotations

import uuid

import httpx
import pytest

from pytest_apex.adapters.rest import RestAdapter
from pytest_apex.app import load_description
from pytest_apex.isolation.identities import IdentityBook
from pytest_apex.isolation.rest_scenario import (
    RestScenarioResult,
    RestScenarioSpec,
    plans_for,
    run_rest_isolation,
)
from tests.plugin.fake_rest_app import DESCRIPTION, FakeRestApp

USERS = 6


async def _run(
    app: FakeRestApp, users: int = USERS, fail_user: int | None = None
) -> RestScenarioResult:
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
        return await run_rest_isolation(spec, make_user)
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
