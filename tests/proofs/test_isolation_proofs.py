"""The isolation suite catches what it claims to: it passes on a clean stack and fails, naming
the right criterion and the users involved, on each isolation fault of the reference stack.

30 users instead of 150 keep the proofs quick; every fault below shows at that size.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

import pytest

from tests.conftest import COMPOSE_FILE, ROOT, FaultStack
from tests.proofs.conftest import failed_criteria, run_suite

pytestmark = pytest.mark.xdist_group("fault-stack")

ISOLATION_SUITE: Final = ROOT / "tests" / "isolation" / "test_isolation.py"
PROOF_USERS: Final = 30
ARGS: Final = (
    "-m",
    "isolation",
    "--apex-threshold",
    f"concurrent_users_min={PROOF_USERS}",
    # 30 users check fewer payloads than 150: the rarest leak they can see is rarer than
    # 1 in 200, not 1 in 1,000.
    "--apex-threshold",
    "isolation_detectable_leak_rate_max=0.005",
    # Runs take about a second at 30 users: a run still streaming after three times this is
    # lost, so a fault that steals events costs seconds, not the default 30 s per round.
    "--apex-threshold",
    "isolation_run_p95_s_max=3",
)
AGENT_CRITERIA: Final = frozenset(
    {
        "concurrent_users",
        "detectable_leak_rate",
        "channels_covered",
        "cross_user_events",
        "late_foreign_frames",
        "cross_user_rest",
        "cross_user_identities",
        "own_thread_listed",
        "own_thread_read",
        "own_run_status_read",
        "probes_answered",
        "cross_user_access",
        "runs_completed",
        "error_path_exercised",
        "cancels_honoured",
        "containment_p95",
        "cleanup",
        "isolation_violations.rows",
    }
)
# The REST scenario over the described resources (threads and their messages).
REST_CRITERIA: Final = frozenset(
    {
        "concurrent_users",
        "detectable_leak_rate",
        "own_items_listed",
        "own_items_read",
        "cross_user_listings",
        "cross_user_reads",
        "resource_probes_answered",
        "cross_user_resource_access",
    }
)
CRITERIA: Final = AGENT_CRITERIA | REST_CRITERIA
# What a leak on the socket may also fail: a leaked event names another user's id (an
# identity), may arrive while the viewer has no run open (late), and the run it was taken
# from may be left without its events.
SOCKET_SPILL: Final = frozenset(
    {"cross_user_identities", "late_foreign_frames", "runs_completed", "cancels_honoured"}
)
# What a leak in a REST body may also fail: other users' ids in it, the viewer's own items
# pushed out of it.
REST_SPILL: Final = frozenset(
    {"cross_user_identities", "own_thread_listed", "own_items_listed", "cross_user_rest"}
)


@pytest.fixture
def clean_afterwards(fault_stack: FaultStack) -> Iterator[FaultStack]:
    """Forget the agent runs a fault left, so its traces never reach a later clean check,
    and go back to one backend."""
    try:
        yield fault_stack
    finally:
        fault_stack.reset_data()
        if fault_stack.topology:
            fault_stack.switch()


@pytest.mark.parametrize(
    ("condition", "topology"),
    [
        ("", ""),
        # Latency on every Redis round trip: the condition of redis-py #2624's leak.
        ("slow_redis", ""),
        # The backend twice behind a balancer: users spread over both replicas.
        ("", "two_backends"),
    ],
    ids=["one-backend", "slow-redis", "two-backends"],
)
def test_isolation_suite_passes_on_the_clean_stack(
    pytester: pytest.Pytester, clean_afterwards: FaultStack, condition: str, topology: str
) -> None:
    faults = (condition,) if condition else ()
    urls = clean_afterwards.suite_urls(*faults, topology=topology)
    result, report = run_suite(pytester, ISOLATION_SUITE, urls, ARGS)

    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    assert report["verdict"] == "pass", failed_criteria(report)
    assert {c["name"] for c in report["criteria"]} == CRITERIA
    users = [c for c in report["criteria"] if c["name"] == "concurrent_users"]
    assert [u["observed"] for u in users] == [PROOF_USERS, PROOF_USERS]
    runs = next(c for c in report["criteria"] if c["name"] == "runs_completed")
    assert runs["observed"] == runs["threshold"] >= 3 * PROOF_USERS


@pytest.mark.parametrize(
    ("fault", "must_fail", "may_fail"),
    [
        # Leaks written for this suite's proofs, each of a kind the suite was not built
        # around: outside a run's window, on the error path, after a cancellation, past the
        # app's own limit, transformed (truncated previews), on a later page, across replicas.
        ("late_fanout", {"late_foreign_frames"}, SOCKET_SPILL | {"cross_user_events"}),
        # The run's status keeps the error text too: the leak shows on REST as well.
        ("error_context", {"cross_user_events"}, SOCKET_SPILL | {"cross_user_rest"}),
        ("cancel_leak", {"cross_user_events"}, SOCKET_SPILL),
        (
            "overflow_shared",
            {"cross_user_events"},
            SOCKET_SPILL | {"isolation_violations.rows", "containment_p95"},
        ),
        # A preview keeps 32 characters: where a user's latest message is the agent's answer
        # ("Apex handled your request: ..."), the canary is cut off; where it is the user's
        # own message (the REST scenario's), the canary leads and the leak is named.
        ("preview_leak", {"cross_user_listings"}, REST_SPILL),
        ("page_cache", {"cross_user_rest", "cross_user_listings"}, REST_SPILL),
        (
            "replica_ids@two_backends",
            {"cross_user_rest"},
            REST_SPILL | {"own_run_status_read"},
        ),
        # The original platform's bug: runs read whichever user's context was set last, so
        # events reach the wrong user, their owners never see them finish, and the database
        # records one agent instance under many users.
        (
            "shared_context",
            {"cross_user_events", "isolation_violations.rows"},
            # The runs record their messages under the wrong context too.
            SOCKET_SPILL | {"error_path_exercised", "containment_p95", "cross_user_rest"},
        ),
        ("broadcast_events", {"cross_user_events"}, SOCKET_SPILL),
        # The REST scenarios see both bugs on their own too: a list cached for whoever asked
        # first shows other users' threads (and hides the viewer's own), an id read
        # without its owner check serves another user's thread.
        ("unscoped_cache", {"cross_user_rest", "cross_user_listings"}, REST_SPILL),
        (
            "idor",
            {"cross_user_access", "cross_user_resource_access"},
            REST_SPILL | {"cross_user_reads"},
        ),
    ],
)
def test_isolation_suite_fails_on_each_isolation_fault_naming_its_criterion(
    pytester: pytest.Pytester,
    clean_afterwards: FaultStack,
    fault: str,
    must_fail: set[str],
    may_fail: set[str],
) -> None:
    fault, _, topology = fault.partition("@")
    urls = clean_afterwards.suite_urls(fault, topology=topology)
    result, report = run_suite(pytester, ISOLATION_SUITE, urls, ARGS)

    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()
    assert report["verdict"] == "fail"
    failed = {c["name"] for c in failed_criteria(report)}
    assert must_fail <= failed, (fault, failed)
    # Precise, not noisy: nothing unrelated to the fault is blamed.
    assert failed <= must_fail | may_fail, (fault, failed - must_fail - may_fail)
    # The message says which users saw whose data, without tokens.
    for name in sorted(must_fail - {"isolation_violations.rows", "cross_user_access"}):
        result.stdout.fnmatch_lines([f"*isolation {name} * > 0: * breaches: *user* saw data of *"])
    output = result.stdout.str()
    assert "Bearer" not in output  # no JWT in the failure text
    assert "eyJ" not in output
    assert "apexcanary-" not in output  # nor the canaries themselves


@pytest.mark.integration
def test_isolation_suite_holds_for_150_users_on_a_compose_target(pytester: pytest.Pytester) -> None:
    """The report's promise at full size, as a user runs it (`pytest -m isolation`): the
    reference stack brought up by the plugin, 150 users released together, nobody sees
    anybody else's data, every run completes, at the default detection power (a leak in 1 of
    1,000 payloads would have been seen)."""
    # What this test holds the stack to is isolation at full size, not its latency: on two
    # cores shared by the suite's 150 users and the whole stack, CI measured the calm round's
    # p95 at 14.9 s (the stack runs 200 runs at a time; 300 are in flight). The run timeout
    # follows the threshold (3x), so a run still streaming after 60 s is lost, not 30 s.
    # The latency SLOs under load are the load suite's, judged at the report's values.
    args = ["-m", "isolation", f"--apex-stack={COMPOSE_FILE}"]
    args += ["--apex-threshold", "isolation_run_p95_s_max=20"]
    result, report = run_suite(pytester, ISOLATION_SUITE, {}, args)

    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    assert report["verdict"] == "pass", failed_criteria(report)
    observed = {c["name"]: c["observed"] for c in report["criteria"]}
    assert [c["observed"] for c in report["criteria"] if c["name"] == "concurrent_users"] == [
        150,
        150,
    ]
    assert observed["runs_completed"] >= 3 * 150
    assert observed["cross_user_events"] == observed["isolation_violations.rows"] == 0
