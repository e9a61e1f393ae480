"""The isolation suite's agent scenario itself, run against an in-process app: it can only
pass when its controls held, its probes were answered and its database check ran."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pytest_apex.exitstatus import INCONCLUSIVE_EXIT
from tests.conftest import ROOT
from tests.plugin.conftest import ApexPytester

SUITE = ROOT / "pytest_apex" / "suites" / "test_isolation.py"
USERS = 6

# The suite's user layer replaced by the in-process app; the database is never there.
FAKE_LAYERS = """
import pytest
from tests.plugin.fake_stream import FakeApp, FakeStreamingSession

@pytest.fixture(scope="session")
def fake_app():
    return FakeApp(bugs=frozenset({bugs!r}))

@pytest.fixture(scope="session")
def apex_endpoints():
    return {{}}

@pytest.fixture
def apex_new_user(fake_app):
    async def make(index):
        return FakeStreamingSession(fake_app, index)

    return make

@pytest.fixture(scope="session")
def apex_postgres_dsn():
    pytest.skip("no postgres endpoint (give --apex-url postgres=postgresql://...)")
"""


def run_suite(
    apex: ApexPytester, *bugs: str, extra: tuple[str, ...] = ()
) -> tuple[pytest.RunResult, dict[str, Any]]:
    apex.conftest(FAKE_LAYERS.format(bugs=sorted(bugs)))
    apex.pytester.makepyfile(test_isolation=SUITE.read_text(encoding="utf-8"))
    result = apex.run(
        "-k",
        "never_see_each_others_data",  # the agent scenario; the REST one has its own tests
        "-o",
        "asyncio_mode=auto",
        "--apex-seed=3",
        "-s",  # the seed is printed for whoever wants to repeat the run
        "--apex-threshold",
        "isolation_run_p95_s_max=0.5",  # runs take milliseconds here; a lost one 1.5 s
        "--apex-threshold",
        f"concurrent_users_min={USERS}",
        "--apex-threshold",
        "isolation_detectable_leak_rate_max=0.05",
        *extra,
    )
    report = apex.report()
    return result, {c["name"]: c for c in report["criteria"]} | {"": report}


def test_a_clean_run_without_database_or_gauges_is_inconclusive_not_a_pass(
    apex: ApexPytester,
) -> None:
    result, criteria = run_suite(apex)
    result.assert_outcomes(skipped=1)
    assert result.ret == INCONCLUSIVE_EXIT
    assert criteria[""]["verdict"] == "inconclusive"
    assert criteria["isolation_violations.rows"]["reason"] == (
        "the database check did not run: no postgres endpoint "
        "(give --apex-url postgres=postgresql://...)"
    )
    # No metrics endpoint: the cleanup check cannot run, and says so.
    assert criteria["cleanup"]["outcome"] == "inconclusive"
    assert "no endpoint for backend" in criteria["cleanup"]["reason"]
    unproven = {"cleanup", "isolation_violations.rows"}
    others = {n: c["outcome"] for n, c in criteria.items() if n and n not in unproven}
    assert set(others.values()) == {"pass"}, others
    result.stdout.fnmatch_lines(["*isolation (repeat with --apex-seed=3)*"])


def test_probes_answered_500_fail_the_suite_and_leave_breaches_unproven(apex: ApexPytester) -> None:
    result, criteria = run_suite(apex, "server_errors")
    result.assert_outcomes(failed=1)
    assert criteria[""]["verdict"] == "fail"
    answered = criteria["probes_answered"]
    assert answered["outcome"] == "fail"
    assert answered["observed"] < answered["threshold"]
    assert criteria["cross_user_access"]["outcome"] == "inconclusive"
    assert criteria["cross_user_rest"]["outcome"] == "inconclusive"
    assert criteria["own_thread_listed"]["outcome"] == "fail"
    result.stdout.fnmatch_lines(["*isolation probes_answered * unanswered, e.g. *answered 500*"])


def test_a_control_whose_request_raised_fails_naming_the_error(apex: ApexPytester) -> None:
    # No answer at all, not even an error status: the control was sent and never passed.
    result, criteria = run_suite(apex, "list_raises")
    result.assert_outcomes(failed=1)
    listed = criteria["own_thread_listed"]
    assert (listed["outcome"], listed["observed"]) == ("fail", 0)
    assert listed["threshold"] > 0
    assert criteria["cross_user_rest"]["outcome"] == "inconclusive"
    result.stdout.fnmatch_lines(
        [
            "*isolation own_thread_listed 0 listings < "
            "*REST during a run raised*ConnectionResetError*"
        ]
    )


def test_a_breach_fails_naming_who_saw_whose_data(apex: ApexPytester) -> None:
    result, criteria = run_suite(apex, "broadcast")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert criteria["cross_user_events"]["outcome"] == "fail"
    result.stdout.fnmatch_lines(
        ["*isolation cross_user_events * breaches: * users saw data of * others, e.g. user*"]
    )
    output = result.stdout.str()
    assert "apexcanary-" not in output  # never the canaries themselves


def test_no_event_ever_received_leaves_cross_user_events_unproven(apex: ApexPytester) -> None:
    result, criteria = run_suite(apex, "silent")
    assert result.ret == pytest.ExitCode.TESTS_FAILED  # runs_completed fails
    events = criteria["cross_user_events"]
    assert (events["observed"], events["outcome"]) == (0, "inconclusive")
    assert events["reason"] == "no user received any event of its own runs"
    assert criteria["runs_completed"]["outcome"] == "fail"


def test_allure_gets_the_contamination_matrix_and_the_breached_stream(apex: ApexPytester) -> None:
    results = apex.pytester.path / "allure-results"
    run_suite(apex, "late_summary", extra=(f"--alluredir={results}",))
    documents = [json.loads(p.read_text()) for p in results.glob("*-result.json")]
    attachments = {a["name"]: a for d in documents for a in d.get("attachments", [])}
    assert "contamination matrix" in attachments, attachments
    assert any(name.startswith("stream of user") for name in attachments), attachments
    for attachment in attachments.values():
        picture = results / attachment["source"]
        assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
