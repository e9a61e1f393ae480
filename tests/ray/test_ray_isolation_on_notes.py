"""`pytest -m isolation --apex-executor ray` against the Notes app, its REST users dealt over
the three-node cluster: a planted ownership bug fails naming who saw whose data, as in a run
of one process (tests/notes/test_as_a_new_project.py). (The clean REST scenario on Ray passes
in tests/ray/test_ray_isolation_on_reference.py, which runs it too.)"""

from __future__ import annotations

from typing import Final

import pytest

from tests.conftest import ROOT
from tests.notes.markers import NOTES_STACK
from tests.notes.stack import NotesStack
from tests.proofs.conftest import outcomes, run_suite
from tests.ray.conftest import NEEDS_RAY, NODES

pytestmark = [NEEDS_RAY, *NOTES_STACK]

SUITE: Final = ROOT / "pytest_apex" / "suites" / "test_isolation.py"
USERS: Final = 12


def _run(pytester: pytest.Pytester, notes: NotesStack, ray_cluster: str) -> tuple[str, dict]:
    urls = {service: notes.url(service) for service in ("api", "identity")}
    result, report = run_suite(
        pytester,
        SUITE,
        urls,
        (
            f"--apex-app={ROOT / 'fixtures' / 'notes' / 'apex.toml'}",
            "-m",
            "isolation",
            "-s",
            f"--apex-threshold=concurrent_users_min={USERS}",
            "--apex-threshold=isolation_detectable_leak_rate_max=0.01",
            "--apex-executor=ray",
            f"--apex-ray-address={ray_cluster}",
            f"--apex-load-workers={NODES}",
        ),
    )
    return result.stdout.str(), report


def test_a_planted_leak_fails_naming_who_saw_whose_data(
    pytester: pytest.Pytester, notes_stack: NotesStack, ray_cluster: str
) -> None:
    notes_stack.set_bugs("notes_list_leak")
    try:
        out, report = _run(pytester, notes_stack, ray_cluster)
    finally:
        notes_stack.set_bugs()
    assert f"isolation executor ray: {NODES} shares on {NODES} nodes, STRICT_SPREAD" in out
    assert report["verdict"] == "fail", out[-4000:]
    seen = outcomes(report)
    assert seen["cross_user_resource_access"] == "fail"
    # Its controls held: the failure is the leak, not a run that could not see.
    assert seen["own_items_listed"] == seen["own_items_read"] == "pass"
    assert " saw data of user" in out
