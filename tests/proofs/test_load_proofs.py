"""The load suite catches what it claims to: it passes on the clean stack, fails its p95 on
slow_responses and its error rate on error_burst, naming the stage, and its soak fails the
memory slope on memory_leak, a leak the report's variance criterion alone passes. Short
stages (two, of 10 and 25 users, 8 s each) and a 40 s soak: the report's full stages and its
24 h belong to the staging profile.
"""

from __future__ import annotations

from typing import Final

import pytest

from tests.conftest import FaultStack
from tests.proofs.conftest import ACCEPTANCE, failed_criteria, run_suite

pytestmark = pytest.mark.xdist_group("fault-stack")

LOAD_SUITE: Final = ACCEPTANCE / "test_load.py"
SHORT_STAGES: Final = (
    "-m",
    "load and not soak",
    "--apex-threshold",
    "load_stages=10,25",
    "--apex-threshold",
    "stage_duration_s=8",
    # 16 s of probes cannot show > 99.9 % (that needs 1,000 of them); > 99 % needs 100.
    "--apex-threshold",
    "availability_min=0.99",
)
SHORT_SOAK: Final = (
    "--apex-threshold",
    "soak_users=10",
    "--apex-threshold",
    "soak_duration_s=40",
    "--apex-threshold",
    "memory_warmup_s=10",
    "--apex-threshold",
    "memory_sample_s=0.5",
    "--apex-threshold",
    "availability_min=0.99",
)
# A slow leak: 32 KiB per agent run (the switch's default is 1 MiB), a few MiB over the
# soak on a backend of about a hundred: its variance stays far under 5 %.
SLOW_LEAK: Final = {"APEX_LEAK_BYTES_PER_RUN": "32768"}


def _failed(report: dict) -> dict[tuple[str, str], str]:
    """(criterion, stage) -> outcome of every criterion that did not pass."""
    return {
        (c["name"], str((c.get("stage") or {}).get("users", ""))): c["outcome"]
        for c in failed_criteria(report)
    }


def test_load_suite_passes_on_the_clean_stack(
    pytester: pytest.Pytester, fault_stack: FaultStack
) -> None:
    result, report = run_suite(pytester, LOAD_SUITE, fault_stack.suite_urls(), SHORT_STAGES)

    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    assert report["verdict"] == "pass", failed_criteria(report)
    names = {c["name"] for c in report["criteria"]}
    assert {"success_rate", "error_rate", "p95", "avg_response", "agent_final_event p95"} <= names
    assert {"availability backend", "availability auth", "availability frontend"} <= names
    # The server's own view of every stage, from the stack's Prometheus, agreed.
    server = [c for c in report["criteria"] if c["name"] in ("server_p95", "server_alerts")]
    assert len(server) == 4, server


def test_the_soak_passes_its_memory_gates_on_the_clean_stack(
    pytester: pytest.Pytester, fault_stack: FaultStack
) -> None:
    result, report = run_suite(
        pytester, LOAD_SUITE, fault_stack.suite_urls(), ("-m", "soak", *SHORT_SOAK)
    )

    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    assert report["verdict"] == "pass", failed_criteria(report)
    names = {c["name"] for c in report["criteria"]}
    assert {"memory_slope backend", "memory_variance backend"} <= names


def test_load_suite_fails_p95_on_slow_responses_naming_the_stage(
    pytester: pytest.Pytester, fault_stack: FaultStack
) -> None:
    result, report = run_suite(
        pytester, LOAD_SUITE, fault_stack.suite_urls("slow_responses"), SHORT_STAGES
    )

    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()
    failed = _failed(report)
    assert failed.get(("p95", "10")) == "fail", failed
    assert failed.get(("p95", "25")) == "fail", failed
    result.stdout.fnmatch_lines(["*load p95 2.* s >= 2.00 s at 10 users (stage 1/2)*"])
    # The server measured the same slowness itself: it is the app, not the generator.
    assert failed.get(("server_p95", "10")) == "fail", failed
    result.stdout.fnmatch_lines(["*load server_p95 * s >= 2.00 s at 10 users*the server counted*"])


def test_load_suite_fails_the_error_rate_on_error_burst(
    pytester: pytest.Pytester, fault_stack: FaultStack
) -> None:
    result, report = run_suite(
        pytester, LOAD_SUITE, fault_stack.suite_urls("error_burst"), SHORT_STAGES
    )

    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()
    failed = _failed(report)
    assert failed.get(("error_rate", "25")) == "fail", failed
    # Only the error criteria: the slow path is not blamed for errors.
    assert {name for name, _ in failed} <= {"error_rate", "success_rate"}, failed
    result.stdout.fnmatch_lines(
        ["*load error_rate * >= 0.0100 at 25 users (stage 2/2): errors: 5xx*"]
    )
    # The server counted the stage's answers itself (whether its 2 % error-rate rule goes
    # pending within 16 s depends on how the burst fell: not asserted; a rule firing is the
    # shared_context proof's).
    result.stdout.fnmatch_lines(["server view, stage 2/2 (25 users): p95 * s (generator *answers*"])


def test_load_suite_fails_server_alerts_on_shared_context_naming_the_firing_rule(
    pytester: pytest.Pytester, fault_stack: FaultStack
) -> None:
    """The original platform's bug under load: the backend catches its own misrouted events
    and counts them, and the stack's ApexIsolationViolation rule fires within seconds."""
    try:
        urls = fault_stack.suite_urls("shared_context")
        result, report = run_suite(pytester, LOAD_SUITE, urls, SHORT_STAGES)
    finally:
        fault_stack.reset_data()

    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()
    failed = _failed(report)
    assert failed.get(("server_alerts", "25")) == "fail", failed
    result.stdout.fnmatch_lines(
        ["*load server_alerts * > 0 at 25 users*firing: *ApexIsolationViolation*"]
    )


def test_the_soak_fails_the_memory_slope_on_a_slow_leak_that_the_variance_passes(
    pytester: pytest.Pytester, fault_stack: FaultStack
) -> None:
    urls = fault_stack.suite_urls("memory_leak", env=SLOW_LEAK)
    result, report = run_suite(pytester, LOAD_SUITE, urls, ("-m", "soak", *SHORT_SOAK))

    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()
    by_name = {c["name"]: c for c in report["criteria"]}
    assert by_name["memory_slope backend"]["outcome"] == "fail", failed_criteria(report)
    # What the report's own criterion would have said of this leak: nothing.
    assert by_name["memory_variance backend"]["outcome"] == "pass", by_name
    assert {name for name, _ in _failed(report)} == {"memory_slope backend"}, _failed(report)
    result.stdout.fnmatch_lines(["*soak memory_slope backend * KB/h > 131072 KB/h*growth*r²*"])
