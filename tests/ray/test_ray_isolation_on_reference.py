"""`pytest -m isolation --apex-executor ray` against the reference stack, its users (both
scenarios: streamed agent runs and the REST resources) dealt over the three-node cluster:
the clean stack passes with every criterion of a run in one process, and a leak between
users fails naming who saw whose data, wherever the two users ran. (Each fault's teeth are
proven in one process in tests/proofs; here the question is whether spreading the users
changes what is judged and what is caught.)"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, Final

import pytest

from tests.conftest import FaultStack
from tests.proofs.conftest import failed_criteria, run_suite
from tests.proofs.test_isolation_proofs import ARGS, CRITERIA, ISOLATION_SUITE, PROOF_USERS
from tests.ray.conftest import NEEDS_RAY, NODES

pytestmark = [NEEDS_RAY, pytest.mark.xdist_group("fault-stack")]

HEADER: Final = f"isolation executor ray: {NODES} shares on {NODES} nodes, STRICT_SPREAD"


@pytest.fixture
def stack(fault_stack: FaultStack) -> Iterator[FaultStack]:
    try:
        yield fault_stack
    finally:
        fault_stack.reset_data()  # no agent run of a fault reaches a later check


def _on_ray(
    pytester: pytest.Pytester, urls: dict[str, str], ray_cluster: str
) -> tuple[pytest.RunResult, dict[str, Any]]:
    return run_suite(
        pytester,
        ISOLATION_SUITE,
        urls,
        (
            *ARGS,
            "-s",
            "--apex-executor=ray",
            f"--apex-ray-address={ray_cluster}",
            f"--apex-load-workers={NODES}",
        ),
    )


def test_the_clean_stack_passes_with_its_users_on_three_nodes(
    pytester: pytest.Pytester, stack: FaultStack, ray_cluster: str
) -> None:
    result, report = _on_ray(pytester, stack.suite_urls(), ray_cluster)
    out = result.stdout.str()
    assert out.count(HEADER) == 2, out[-3000:]  # the streaming and the REST scenario
    assert report["verdict"] == "pass", failed_criteria(report)
    assert {c["name"] for c in report["criteria"]} == CRITERIA
    users = [c for c in report["criteria"] if c["name"] == "concurrent_users"]
    assert [u["observed"] for u in users] == [PROOF_USERS, PROOF_USERS]


def test_a_leak_between_users_on_different_nodes_fails_naming_them(
    pytester: pytest.Pytester, stack: FaultStack, ray_cluster: str
) -> None:
    # Every run's events go to every socket: a user on one node receives the events of
    # users on the others. (A REST leak on Ray: tests/ray/test_ray_isolation_on_notes.py.)
    criterion = "cross_user_events"
    result, report = _on_ray(pytester, stack.suite_urls("broadcast_events"), ray_cluster)
    assert report["verdict"] == "fail"
    assert criterion in {c["name"] for c in failed_criteria(report)}
    result.stdout.fnmatch_lines([f"*isolation {criterion} * > 0: * breaches: *user* saw data of *"])
    out = result.stdout.str()
    assert "apexcanary-" not in out
    # Its examples name viewer and owner; users are dealt over the nodes like cards, so
    # user i ran on node i % 3: a viewer and an owner on different nodes were seen.
    pairs = re.findall(r"user(\d+) <[^>]*> received data of user(\d+) <", out)
    assert any(int(v) % NODES != int(o) % NODES for v, o in pairs), pairs
