"""`pytest -m load --apex-executor ray` against the reference stack, on the three-node cluster:
the verdict has the criteria of a local run, stage for stage, and the run's header says how
the workers were placed. (The suite's teeth are proven locally in tests/proofs; here the
question is only whether the executor changes what is judged.)"""

from __future__ import annotations

import re
from typing import Any, Final

import pytest

from tests.conftest import FaultStack
from tests.proofs.conftest import ACCEPTANCE, run_suite
from tests.ray.conftest import NEEDS_RAY, NODES

pytestmark = [NEEDS_RAY, pytest.mark.xdist_group("fault-stack")]

SHORT_STAGE: Final = (
    "-m",
    "load and not soak",
    "--apex-threshold",
    "load_stages=6",
    "--apex-threshold",
    "stage_duration_s=6",
)


def _judged(report: dict[str, Any]) -> set[tuple[str, int | None]]:
    """(criterion, stage's users) of every criterion; a window's breach names its window,
    which is an outcome, not another criterion."""
    return {
        (re.sub(r" in window .*$", "", c["name"]), (c.get("stage") or {}).get("users"))
        for c in report["criteria"]
    }


def test_a_ray_run_judges_what_a_local_run_judges(
    pytester: pytest.Pytester, fault_stack: FaultStack, ray_cluster: str
) -> None:
    urls = fault_stack.suite_urls()
    suite = ACCEPTANCE / "test_load.py"
    _, local = run_suite(pytester, suite, urls, SHORT_STAGE)
    on_ray = (
        *SHORT_STAGE,
        "--apex-executor=ray",
        f"--apex-ray-address={ray_cluster}",
        f"--apex-load-workers={NODES}",
    )
    result, remote = run_suite(pytester, suite, urls, on_ray)
    out = result.stdout.str()
    assert f"executor ray at {ray_cluster}" in out  # the run's header
    assert f"{NODES} workers on {NODES} nodes, STRICT_SPREAD" in out, out[-3000:]
    assert _judged(remote) == _judged(local)
    stage = next(c for c in remote["criteria"] if c["name"] == "success_rate")
    assert stage["stage"]["users"] == 6
    assert not [c for c in remote["criteria"] if "load worker" in (c.get("reason") or "")]
