"""The isolation suite's agent scenario itself, run against in-memory users: it can only
pass when its probes were answered and its database check ran."""

from __future__ import annotations

from typing import Any

import pytest

from pytest_apex.exitstatus import INCONCLUSIVE_EXIT
from tests.conftest import ROOT
from tests.plugin.conftest import ApexPytester

SUITE = ROOT / "pytest_apex" / "suites" / "test_isolation.py"
USERS = 4

# The suite's adapter layers replaced by a FakeWorld; the database is never there.
FAKE_LAYERS = """
import pytest
from tests.plugin.fake_users import FakeWorld

WORLD_FLAGS = {flags!r}

@pytest.fixture
def fake_world():
    return FakeWorld({users}, **WORLD_FLAGS)

@pytest.fixture
def apex_new_user(fake_world):
    async def make(index):
        return fake_world.sessions[index]

    return make

@pytest.fixture
def apex_run_agent(fake_world):
    return fake_world.run_agent

@pytest.fixture(scope="session")
def apex_postgres_dsn():
    pytest.skip("no postgres endpoint (give --apex-url postgres=postgresql://...)")
"""


def run_suite(apex: ApexPytester, **flags: Any) -> tuple[pytest.RunResult, dict[str, Any]]:
    apex.conftest(FAKE_LAYERS.format(flags=flags, users=USERS))
    apex.pytester.makepyfile(test_isolation=SUITE.read_text(encoding="utf-8"))
    result = apex.run(
        "-k",
        "never_see_each_others_data",  # the agent scenario; the REST one has its own tests
        "-o",
        "asyncio_mode=auto",
        "--apex-threshold",
        f"concurrent_users_min={USERS}",
    )
    report = apex.report()
    return result, {c["name"]: c for c in report["criteria"]} | {"": report}


def test_probes_all_answered_500_fail_the_suite_and_leave_breaches_unproven(
    apex: ApexPytester,
) -> None:
    result, criteria = run_suite(apex, server_errors=True)
    result.assert_outcomes(failed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert criteria[""]["verdict"] == "fail"
    for kind, sent in (("thread_list", USERS), ("thread_access", USERS * 3)):
        answered = criteria[f"{kind}_probes_answered"]
        assert (answered["observed"], answered["threshold"], answered["outcome"]) == (
            0,
            sent,
            "fail",
        )
        breaches = criteria[
            f"cross_user_{kind}s" if kind == "thread_list" else f"cross_user_{kind}"
        ]
        assert breaches["observed"] == 0
        assert breaches["outcome"] == "inconclusive"
        assert breaches["reason"] == f"0 samples, fewer than the {sent} needed"
    # The failure shows what came back instead of answers, listing exceptions included.
    result.stdout.fnmatch_lines(
        [
            "E*isolation thread_list_probes_answered 0 probes < 4 probes: 4 of 4 probes "
            "unanswered: 4 errors, e.g. user0 <user0@apex.test>: listing threads raised "
            "ServerError: Server error '500*",
            "E*isolation thread_access_probes_answered 0 probes < 12 probes: 12 of 12 probes "
            "unanswered: 12 errors, e.g. user0 <user0@apex.test>: GET another user's thread "
            "answered 500*",
        ]
    )


def test_a_clean_run_without_the_database_is_inconclusive_not_a_pass(apex: ApexPytester) -> None:
    result, criteria = run_suite(apex)
    result.assert_outcomes(skipped=1)
    assert result.ret == INCONCLUSIVE_EXIT
    assert criteria[""]["verdict"] == "inconclusive"
    database = criteria["isolation_violations.rows"]
    assert database["outcome"] == "inconclusive"
    assert database["reason"] == (
        "the database check did not run: no postgres endpoint "
        "(give --apex-url postgres=postgresql://...)"
    )
    others = {name: c["outcome"] for name, c in criteria.items() if name}
    assert others == {
        "concurrent_users": "pass",
        "cross_user_events": "pass",
        "thread_list_probes_answered": "pass",
        "cross_user_thread_lists": "pass",
        "thread_access_probes_answered": "pass",
        "cross_user_thread_access": "pass",
        "runs_completed": "pass",
        "isolation_violations.rows": "inconclusive",
    }


def test_a_breach_seen_fails_even_with_probes_unanswered(apex: ApexPytester) -> None:
    result, criteria = run_suite(apex, idor=True, flaky_access=True)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    access = criteria["cross_user_thread_access"]
    assert (access["observed"], access["outcome"]) == (6, "fail")  # half of the 12 probes
    assert criteria["thread_access_probes_answered"]["observed"] == 6


def test_no_event_ever_received_leaves_cross_user_events_unproven(apex: ApexPytester) -> None:
    result, criteria = run_suite(apex, silent=True)
    assert result.ret == pytest.ExitCode.TESTS_FAILED  # runs_completed fails
    events = criteria["cross_user_events"]
    assert (events["observed"], events["outcome"]) == (0, "inconclusive")
    assert events["reason"] == "no user received any event of its own runs"
