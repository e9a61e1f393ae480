"""The apex_criteria fixture, the JSON verdict and the terminal summary, in real pytest runs."""

from __future__ import annotations

import pytest

from tests.plugin.conftest import ApexPytester

CRITERIA_TESTS = """
import pytest
from pytest_apex import Stage

pytestmark = pytest.mark.load

def test_p95_met(apex_criteria):
    c = apex_criteria.check("p95", 1.2, 2.0, "<", unit="s", stage=Stage(1, 5, 10))
    assert c.passed

def test_p95_breached(apex_criteria):
    apex_criteria.check("p95", 2.41, 2.0, "<", unit="s", stage=Stage(5, 5, 150))

@pytest.mark.health
def test_marker_closest_to_the_test_wins(apex_criteria):
    apex_criteria.check("availability", 1.0, 0.999, ">")
"""


def test_check_passes_and_fails_with_the_criterion_message(apex: ApexPytester) -> None:
    apex.pytester.makepyfile(CRITERIA_TESTS)
    result = apex.run()
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        ["E*AssertionError: load p95 2.41 s >= 2.00 s at 150 users (stage 5/5)"]
    )
    # The recorder's own frames are hidden from the traceback.
    assert "recording.py" not in result.stdout.str()


def test_report_is_written_on_failure_with_every_criterion(apex: ApexPytester) -> None:
    apex.pytester.makepyfile(CRITERIA_TESTS)
    apex.run()
    report = apex.report()
    assert report["verdict"] == "fail"
    assert report["profile"] == "ci"
    assert report["target"] == "compose:apexrun-fake"  # from the target session's describe()
    assert report["counts"] == {"passed": 2, "failed": 1}
    by_name = {(c["suite"], c["name"], c["passed"]): c for c in report["criteria"]}
    assert set(by_name) == {
        ("health", "availability", True),
        ("load", "p95", True),
        ("load", "p95", False),
    }
    breached = by_name[("load", "p95", False)]
    assert breached == {
        "suite": "load",
        "name": "p95",
        "observed": 2.41,
        "threshold": 2.0,
        "op": "<",
        "unit": "s",
        "stage": {"index": 5, "count": 5, "users": 150},
        "outcome": "fail",
        "reason": "",
        "passed": False,
        "samples": None,
        "min_samples": 0,
        "test": "test_report_is_written_on_failure_with_every_criterion.py::test_p95_breached",
    }
    assert report["thresholds"]["p95_s_max"] == 2.0
    assert report["faults"] == []
    assert [c["suite"] for c in report["criteria"]] == ["health", "load", "load"]


def test_verdict_passes_when_everything_holds(apex: ApexPytester) -> None:
    apex.pytester.makepyfile(
        """
        import pytest

        @pytest.mark.health
        def test_ok(apex_criteria):
            apex_criteria.check("availability", 1.0, 0.999, ">")
        """
    )
    apex.run("--apex-report=out/v.json").assert_outcomes(passed=1)
    report = apex.report("out/v.json")
    assert report["verdict"] == "pass"
    assert not (apex.path / ".apex").exists()


def test_a_failing_test_fails_the_verdict_even_with_all_criteria_met(apex: ApexPytester) -> None:
    apex.pytester.makepyfile(
        """
        import pytest

        @pytest.mark.health
        def test_ok(apex_criteria):
            apex_criteria.check("availability", 1.0, 0.999, ">")

        def test_broken():
            raise RuntimeError("boom")
        """
    )
    apex.run()
    report = apex.report()
    assert report["verdict"] == "fail"
    assert all(c["passed"] for c in report["criteria"])


def test_record_does_not_fail_the_test(apex: ApexPytester) -> None:
    apex.pytester.makepyfile(
        """
        import pytest

        @pytest.mark.soak
        def test_slope(apex_criteria):
            c = apex_criteria.record("memory_slope", 2048, 1024, "<=", unit="KB/h")
            assert not c.passed
            assert apex_criteria.recorded == [c]
        """
    )
    apex.run().assert_outcomes(passed=1)
    report = apex.report()
    assert report["verdict"] == "fail"
    assert report["criteria"][0]["suite"] == "soak"


def test_explicit_suite_and_missing_suite(apex: ApexPytester) -> None:
    apex.pytester.makepyfile(
        """
        def test_explicit(apex_criteria):
            assert apex_criteria.check("p95", 1, 2, "<", suite="rollback").suite == "rollback"

        def test_missing(apex_criteria):
            apex_criteria.check("p95", 1, 2, "<")
        """
    )
    result = apex.run()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["E*TypeError: apex_criteria: criterion 'p95' has no suite; *"])


def test_check_threshold_uses_configured_values(apex: ApexPytester) -> None:
    apex.pytester.makepyfile(
        """
        import pytest

        @pytest.mark.load
        def test_p95(apex_criteria):
            apex_criteria.check_threshold("p95_s_max", 1.6)

        @pytest.mark.isolation
        def test_breaches(apex_criteria):
            apex_criteria.check_threshold("isolation_breaches_max", 0)

        @pytest.mark.load
        def test_setting_is_not_a_criterion(apex_criteria):
            with pytest.raises(TypeError, match="a setting"):
                apex_criteria.check_threshold("stage_duration_s", 1)
        """
    )
    result = apex.run("--apex-threshold=p95_s_max=1.5")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["E*AssertionError: load p95 1.60 s >= 1.50 s"])


def test_hooks_see_every_criterion_and_the_verdict(apex: ApexPytester) -> None:
    apex.conftest(
        """
seen = []

def pytest_apex_criterion_recorded(criterion, item):
    seen.append((criterion.message, item.name))

def pytest_apex_verdict(verdict, config):
    from pytest_apex import Criterion
    # An implementation may add criteria of its own before the report is written.
    verdict.add(Criterion("health", "from_hook", 1, 1, "=="))
    print("HOOK SAW", len(seen), verdict.status)
"""
    )
    apex.pytester.makepyfile(CRITERIA_TESTS)
    result = apex.run("-s")
    result.stdout.fnmatch_lines(["*HOOK SAW 3 fail*"])
    assert "from_hook" in {c["name"] for c in apex.report()["criteria"]}


def test_criteria_recorded_in_session_fixture_teardown_are_reported(apex: ApexPytester) -> None:
    apex.pytester.makepyfile(
        """
        import pytest
        from pytest_apex import CriteriaRecorder

        @pytest.fixture(scope="session")
        def soak(pytestconfig):
            yield
            CriteriaRecorder(pytestconfig, suite="soak").record("memory_slope", 10, 1024, "<=")

        def test_uses_soak(soak):
            pass
        """
    )
    apex.run().assert_outcomes(passed=1)
    assert [c["name"] for c in apex.report()["criteria"]] == ["memory_slope"]


def test_terminal_summary_table_grouped_by_suite(apex: ApexPytester) -> None:
    apex.pytester.makepyfile(CRITERIA_TESTS)
    result = apex.run()
    result.stdout.fnmatch_lines(
        [
            "*= apex criteria =*",
            "health: 1 passed, 0 failed, 0 inconclusive",
            "  ✓  availability  1.00  >  0.999",
            "load: 1 passed, 1 failed, 0 inconclusive",
            "  ✓  p95           1.20  <   2.00  s  at 10 users (stage 1/5)",
            "  ✗  p95           2.41  <   2.00  s  at 150 users (stage 5/5)",
            "verdict: FAIL (2/3 criteria met)",
            f"report: {apex.path / '.apex' / 'report.json'}",
        ]
    )


def test_no_summary_when_nothing_was_recorded(apex: ApexPytester) -> None:
    apex.pytester.makepyfile("def test_plain():\n    pass\n")
    result = apex.run()
    assert "apex criteria" not in result.stdout.str()
    assert apex.report()["criteria"] == []


def test_collect_only_writes_no_report(apex: ApexPytester) -> None:
    apex.pytester.makepyfile(CRITERIA_TESTS)
    apex.run("--collect-only")
    assert not (apex.path / ".apex").exists()


def test_target_session_is_finished_once_by_the_controller(apex: ApexPytester) -> None:
    apex.pytester.makepyfile("def test_plain():\n    pass\n")
    apex.run()
    events = [(e["event"], e["role"]) for e in apex.events() if e["event"] != "describe"]
    assert events == [("created", "controller"), ("finish", "controller")]


def test_ctrl_c_still_writes_the_verdict_and_tears_down(apex: ApexPytester) -> None:
    apex.pytester.makepyfile(
        """
        import os, signal
        import pytest

        @pytest.mark.load
        def test_measured(apex_criteria):
            apex_criteria.check("p95", 1, 2, "<")

        def test_interrupted():
            os.kill(os.getpid(), signal.SIGINT)

        def test_never_runs():
            pass
        """
    )
    result = apex.pytester.runpytest(*apex.QUIET, no_reraise_ctrlc=True)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    report = apex.report()
    assert report["verdict"] == "fail"  # an interrupted run proves nothing
    assert [c["name"] for c in report["criteria"]] == ["p95"]
    assert ("finish", "controller") in [(e["event"], e.get("role")) for e in apex.events()]
