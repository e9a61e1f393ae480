"""The verdict of a real run: what makes it inconclusive, and the exit status it sets."""

from __future__ import annotations

import pytest

from pytest_apex.criteria import Criterion, Verdict
from pytest_apex.exitstatus import INCONCLUSIVE_EXIT, exit_status
from pytest_apex.settings.model import InconclusivePolicy
from tests.plugin.conftest import ApexPytester

MET = Criterion("load", "p95", 1.0, 2.0, "<")
MISSED = Criterion("load", "p95", 3.0, 2.0, "<")
UNJUDGED = Criterion("load", "p95", float("nan"), 2.0, "<")

SKIPS_AFTER_RECORDING = """
import pytest

@pytest.mark.isolation
def test_partly_judged(apex_criteria):
    apex_criteria.check("cross_user_events", 0, 0, "<=")
    pytest.skip("the database check did not run: no postgres endpoint")
"""

RAISES_INCONCLUSIVE = """
import pytest

@pytest.mark.load
def test_no_samples(apex_criteria):
    apex_criteria.check("p95", 1.0, 2.0, "<", unit="s", samples=3, min_samples=100)
"""


def test_a_suite_test_skipping_after_recording_is_inconclusive_not_a_pass(
    apex: ApexPytester,
) -> None:
    apex.pytester.makepyfile(SKIPS_AFTER_RECORDING)
    result = apex.run()
    result.assert_outcomes(skipped=1)
    assert result.ret == INCONCLUSIVE_EXIT
    report = apex.report()
    assert report["verdict"] == "inconclusive"
    assert [c["outcome"] for c in report["criteria"]] == ["pass"]
    node = "test_a_suite_test_skipping_after_recording_is_inconclusive_not_a_pass.py"
    assert report["inconclusive_tests"] == [
        {
            "test": f"{node}::test_partly_judged",
            "reason": "skipped after recording criteria: "
            "the database check did not run: no postgres endpoint",
        }
    ]


def test_an_inconclusive_criterion_exits_with_its_own_code(apex: ApexPytester) -> None:
    apex.pytester.makepyfile(RAISES_INCONCLUSIVE)
    result = apex.run()
    assert result.ret == INCONCLUSIVE_EXIT
    report = apex.report()
    assert report["verdict"] == "inconclusive"
    [test] = report["inconclusive_tests"]
    assert "3 samples, fewer than the 100 needed" in test["reason"]
    assert report["reasons"][0].startswith("inconclusive: load p95 inconclusive")


def test_inconclusive_pass_exits_0_but_the_report_still_says_inconclusive(
    apex: ApexPytester,
) -> None:
    apex.pytester.makepyfile(RAISES_INCONCLUSIVE)
    assert apex.run().ret == INCONCLUSIVE_EXIT
    apex.pytester.makeini("[pytest]\napex_inconclusive = pass\n")
    assert apex.run().ret == pytest.ExitCode.OK
    assert apex.report()["verdict"] == "inconclusive"
    assert apex.run("--apex-inconclusive=fail").ret == INCONCLUSIVE_EXIT  # the CLI wins


def test_a_selected_suite_that_recorded_nothing_is_inconclusive(apex: ApexPytester) -> None:
    apex.pytester.makepyfile(
        """
        import pytest

        @pytest.mark.load
        def test_measured(apex_criteria):
            apex_criteria.check("p95", 1.0, 2.0, "<")

        @pytest.mark.health
        def test_forgot_to_record():
            pass
        """
    )
    result = apex.run()
    result.assert_outcomes(passed=2)
    assert result.ret == INCONCLUSIVE_EXIT
    report = apex.report()
    assert report["verdict"] == "inconclusive"
    assert report["suites_run"] == ["health", "load"]
    assert report["reasons"] == ["suite health ran but recorded no criterion"]


def test_deselected_suites_owe_nothing(apex: ApexPytester) -> None:
    # rollback: a suite marker the plugin ships no suite module for (yet), so the run holds
    # only this project's tests.
    apex.pytester.makepyfile(
        """
        import pytest

        @pytest.mark.rollback
        def test_measured(apex_criteria):
            apex_criteria.check("p95", 1.0, 2.0, "<")

        @pytest.mark.health
        def test_not_selected():
            pass
        """
    )
    result = apex.run("-m", "rollback")
    assert result.ret == pytest.ExitCode.OK
    report = apex.report()
    assert (report["verdict"], report["suites_run"]) == ("pass", ["rollback"])


def test_a_plain_test_run_keeps_pytests_exit_status(apex: ApexPytester) -> None:
    # The project's own `make test`: the plugin loaded, no suite, nothing recorded.
    apex.pytester.makepyfile(
        """
        import pytest

        def test_plain():
            pass

        def test_skipped():
            pytest.skip("not here")
        """
    )
    result = apex.run()
    assert result.ret == pytest.ExitCode.OK
    report = apex.report()
    assert (report["verdict"], report["suites_run"]) == ("inconclusive", [])


def test_a_failed_criterion_exits_1_even_when_only_recorded(apex: ApexPytester) -> None:
    apex.pytester.makepyfile(
        """
        import pytest

        @pytest.mark.soak
        def test_slope(apex_criteria):
            apex_criteria.record("memory_slope", 2048, 1024, "<=", unit="KB/h")
        """
    )
    result = apex.run()
    result.assert_outcomes(passed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert apex.report()["reasons"] == ["failed: soak memory_slope 2048 KB/h > 1024 KB/h"]


def test_a_failure_outranks_an_inconclusive_test(apex: ApexPytester) -> None:
    apex.pytester.makepyfile(SKIPS_AFTER_RECORDING + "\n\ndef test_broken():\n    assert False\n")
    result = apex.run()
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    report = apex.report()
    assert report["verdict"] == "fail"
    assert [t["test"].split("::")[1] for t in report["inconclusive_tests"]] == [
        "test_partly_judged"
    ]


def test_a_skip_before_recording_anything_is_a_test_that_did_not_apply(
    apex: ApexPytester,
) -> None:
    apex.pytester.makepyfile(
        """
        import pytest

        @pytest.mark.health
        def test_containers():
            pytest.skip("an external target has no containers")

        @pytest.mark.health
        def test_probes(apex_criteria):
            apex_criteria.check("availability", 1.0, 0.999, ">")
        """
    )
    result = apex.run()
    assert result.ret == pytest.ExitCode.OK
    report = apex.report()
    assert (report["verdict"], report["inconclusive_tests"]) == ("pass", [])


def test_an_xfail_is_no_inconclusive_test(apex: ApexPytester) -> None:
    apex.pytester.makepyfile(
        """
        import pytest

        @pytest.mark.health
        @pytest.mark.xfail(reason="known")
        def test_known(apex_criteria):
            apex_criteria.record("availability", 1.0, 0.999, ">")
            assert False
        """
    )
    result = apex.run()
    assert result.ret == pytest.ExitCode.OK
    report = apex.report()
    assert (report["verdict"], report["inconclusive_tests"]) == ("pass", [])


@pytest.mark.parametrize(
    ("pytest_status", "verdict", "policy", "expected"),
    [
        (0, Verdict(criteria=[MET]), "fail", 0),
        (0, Verdict(criteria=[MISSED]), "fail", 1),
        (1, Verdict(criteria=[MET]), "fail", 1),  # a failed test fails the verdict
        (0, Verdict(criteria=[UNJUDGED]), "fail", INCONCLUSIVE_EXIT),
        (0, Verdict(criteria=[UNJUDGED]), "pass", 0),
        (0, Verdict(suites_run=["health"]), "fail", INCONCLUSIVE_EXIT),
        (0, Verdict(), "fail", 0),  # a plain run: nothing selected, nothing recorded
        (5, Verdict(), "fail", 5),
        (2, Verdict(criteria=[MET]), "fail", 2),  # interrupted: pytest's word stands
        (3, Verdict(criteria=[UNJUDGED]), "pass", 3),
        (4, Verdict(criteria=[MISSED]), "fail", 4),
    ],
)
def test_exit_status_rules(
    pytest_status: int, verdict: Verdict, policy: InconclusivePolicy, expected: int
) -> None:
    if pytest_status:
        verdict.session_failed = True  # what prepare() does for any status but 0
    assert exit_status(pytest_status, verdict, policy) == expected


def test_the_terminal_summary_says_why_a_run_is_inconclusive_in_yellow(apex: ApexPytester) -> None:
    apex.pytester.makepyfile(SKIPS_AFTER_RECORDING)
    result = apex.run("--color=yes")
    node = "test_the_terminal_summary_says_why_a_run_is_inconclusive_in_yellow.py"
    result.stdout.fnmatch_lines(
        [
            "*isolation: 1 passed, 0 failed, 0 inconclusive*",
            "*verdict: INCONCLUSIVE (1/1 criteria met)*",
            f"*\x1b[33m*inconclusive test {node}::test_partly_judged: skipped after recording "
            "criteria: the database check did not run: no postgres endpoint*",
        ]
    )
