"""`pytest -m isolation --apex-executor ray` against the reference stack, its users (both
scenarios: streamed agent runs and the REST resources) dealt over the three-node cluster,
with a leak between users switched on (`broadcast_events`: every run's events reach every
socket). One run shows both halves of the question: the verdict judges every criterion a
run in one process judges, everything the leak does not touch (the REST scenario, every
control) holds, and the leak fails naming who saw whose data, users of different nodes
among them. (Each fault's teeth are proven in one process in tests/proofs.)"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Final

import pytest

from tests.conftest import FaultStack
from tests.proofs.conftest import failed_criteria, run_suite
from tests.proofs.test_isolation_proofs import CRITERIA, ISOLATION_SUITE, SOCKET_SPILL
from tests.ray.conftest import NEEDS_RAY, NODES

pytestmark = [NEEDS_RAY, pytest.mark.xdist_group("fault-stack")]

USERS: Final = 12  # four a node: enough to cross every pair of nodes
ARGS: Final = (
    "-m",
    "isolation",
    "-s",
    f"--apex-threshold=concurrent_users_min={USERS}",
    # 12 users check fewer payloads than 150: the rarest leak they can see is 1 in 20.
    "--apex-threshold=isolation_detectable_leak_rate_max=0.05",
    # The machine runs other tests beside this one: the runs' own pace is not the question.
    "--apex-threshold=isolation_run_p95_s_max=10",
    "--apex-executor=ray",
    f"--apex-load-workers={NODES}",
)


@pytest.fixture
def stack(fault_stack: FaultStack) -> Iterator[FaultStack]:
    try:
        yield fault_stack
    finally:
        fault_stack.reset_data()  # no agent run of the fault reaches a later check


def test_a_leak_between_users_on_different_nodes_fails_and_nothing_else_does(
    pytester: pytest.Pytester, stack: FaultStack, ray_cluster: str
) -> None:
    result, report = run_suite(
        pytester,
        ISOLATION_SUITE,
        stack.suite_urls("broadcast_events"),
        (*ARGS, f"--apex-ray-address={ray_cluster}"),
    )
    out = result.stdout.str()
    header = f"isolation executor ray: {NODES} shares on {NODES} nodes, STRICT_SPREAD"
    assert out.count(header) == 2, out[-3000:]  # the streaming and the REST scenario
    assert {c["name"] for c in report["criteria"]} == CRITERIA
    failed = {c["name"] for c in failed_criteria(report)}
    assert "cross_user_events" in failed
    assert failed <= {"cross_user_events"} | SOCKET_SPILL, failed
    users = [c for c in report["criteria"] if c["name"] == "concurrent_users"]
    assert [u["observed"] for u in users] == [USERS, USERS]
    result.stdout.fnmatch_lines(["*isolation cross_user_events * > 0: * breaches: *saw data of *"])
    assert "apexcanary-" not in out
    # The examples name viewer and owner; users are dealt over the nodes like cards, so
    # user i ran on node i % 3: a viewer and an owner on different nodes were seen.
    pairs = re.findall(r"user(\d+) <[^>]*> received data of user(\d+) <", out)
    assert any(int(v) % NODES != int(o) % NODES for v, o in pairs), pairs
