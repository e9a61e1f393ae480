"""Executors without a cluster: shares put back together, settings, and Ray as an extra.

Nothing here needs Ray installed (the extra is optional); tests/ray runs a real cluster.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from pytest_apex.executors import RayNotInstalled, merge_shares
from pytest_apex.executors.ray_executor import Placement, import_ray, on_loopback
from pytest_apex.load.generator import GeneratorHealth
from pytest_apex.load.measure import StageRecorder
from pytest_apex.load.result import StageResult
from pytest_apex.load.stages import ClosedStage
from pytest_apex.load.verdict import Threshold, judge_stage
from pytest_apex.settings.resolve import RawOptions, resolve

CALM = GeneratorHealth(cpu_percent=20.0, lag_p99_s=0.002, lag_max_s=0.004, ticks=100)
PLAN = [ClosedStage(users=4, duration_s=10), ClosedStage(users=8, duration_s=10)]


def _share(index: int, users: int, latencies: list[float]) -> StageResult:
    recorder = StageRecorder(window_s=5)
    for i, latency in enumerate(latencies):
        recorder.record("get", i * 0.1, latency)
    return StageResult(
        index=index,
        count=len(PLAN),
        model="closed",
        description=f"{users} users",
        target=users,
        reached=users,
        duration_s=10,
        elapsed_s=10,
        window_s=5,
        health=CALM,
        ops=recorder.finish(),
        requests=len(latencies),
        peak_users=users,
    )


def test_shares_merge_exactly_when_every_worker_delivered() -> None:
    a = [_share(1, 2, [0.01] * 30), _share(2, 4, [0.02] * 40)]
    b = [_share(1, 2, [0.5] * 10), _share(2, 4, [0.03] * 40)]
    merged = merge_shares(PLAN, {0: a, 1: b}, {}, window_s=5).stages
    assert [s.requests for s in merged] == [40, 80]
    assert [s.target for s in merged] == [4, 8]
    assert merged[0].ops["get"].ok == 40
    assert all(not s.lost for s in merged)


def test_a_worker_lost_in_a_stage_makes_it_and_the_later_ones_inconclusive_naming_it() -> None:
    lost = {1: "load worker 1 on node 10.0.0.7 (abc) died: ActorDiedError"}
    a = [_share(1, 2, [0.01] * 30), _share(2, 4, [0.02] * 40)]
    merged = merge_shares(PLAN, {0: a, 1: []}, lost, window_s=5).stages
    assert merged[0].lost == (f"{lost[1]} (during this stage)",)
    assert merged[1].lost == (f"{lost[1]} (before this stage)",)
    # The survivor's share is there, but the stage is still the whole stage's target.
    assert merged[0].requests == 30
    assert merged[0].target == 4
    (p95,) = judge_stage(merged[0], [Threshold("p95", "<", 2.0)])
    assert p95.outcome == "inconclusive"
    assert "10.0.0.7" in p95.inconclusive
    assert "measured only the other workers" in p95.inconclusive


def test_a_stage_no_worker_delivered_is_an_empty_inconclusive_stage() -> None:
    merged = merge_shares(PLAN, {0: []}, {0: "load worker 0 on node n died"}, 5).stages
    assert [s.completed for s in merged] == [0, 0]
    assert all(s.lost for s in merged)
    criteria = judge_stage(merged[0], [Threshold("error_rate", "<", 0.01)])
    assert [c.outcome for c in criteria] == ["inconclusive"]


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("", True),
        ("127.0.0.1:6379", True),
        ("ray://localhost:10001", True),
        ("auto", False),
        ("ray://head.example:10001", False),
        ("10.1.2.3:6379", False),
    ],
)
def test_only_a_runs_own_instance_or_a_loopback_cluster_is_kept_on_loopback(
    address: str, loopback: bool
) -> None:
    assert on_loopback(address) is loopback


def test_without_ray_installed_the_executor_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` sees without the extra
    with pytest.raises(RayNotInstalled, match=r"pip install 'pytest-apex\[ray\]'"):
        import_ray("")


def _resolve(tmp_path: Path, has_ray: bool = True, **cli: str):
    return resolve(
        RawOptions(source="cli", base=tmp_path, **cli),  # type: ignore[arg-type]
        RawOptions(source="ini", base=tmp_path),
        rootdir=tmp_path,
        has_module=lambda name: has_ray,
    )


def test_the_executor_is_local_unless_told_and_ray_needs_its_extra(tmp_path: Path) -> None:
    assert _resolve(tmp_path).executor == "local"
    settings = _resolve(tmp_path, executor="ray", ray_address=" ray://h:10001 ")
    assert (settings.executor, settings.ray_address) == ("ray", "ray://h:10001")
    with pytest.raises(pytest.UsageError, match=r"--apex-executor: unknown executor 'rey'"):
        _resolve(tmp_path, executor="rey")
    with pytest.raises(pytest.UsageError, match=r"pip install 'pytest-apex\[ray\]'"):
        _resolve(tmp_path, has_ray=False, executor="ray")


def test_the_placement_line_says_when_workers_share_nodes() -> None:
    assert Placement(None, "STRICT_SPREAD", 3).describe(3) == (
        "load executor ray: 3 workers on 3 nodes, STRICT_SPREAD (one per node)"
    )
    assert Placement(None, "SPREAD", 2).describe(4) == (
        "load executor ray: 4 workers on 2 nodes, SPREAD (fewer nodes (2) than workers, so "
        "some nodes run more than one)"
    )


def test_loading_the_plugin_never_imports_ray() -> None:
    # The extra is optional: a run that does not ask for Ray must not need it, or pay for it.
    import subprocess

    check = "import sys, pytest_apex.plugin, pytest_apex.executors; print('ray' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "False", done.stderr


def test_the_isolation_shares_placement_line_names_them() -> None:
    assert (
        Placement(None, "SPREAD", 1)
        .describe(3, "shares", "isolation")
        .startswith("isolation executor ray: 3 shares on 1 node, SPREAD")
    )
    assert Placement(None, "SPREAD", 2).describe(3, "shares", "isolation") == (
        "isolation executor ray: 3 shares on 2 nodes, SPREAD (fewer nodes (2) than shares, so "
        "some nodes run more than one)"
    )


def test_the_users_of_a_spread_run_travel_as_their_description_and_endpoints() -> None:
    # What an actor gets: the description (read-only mappings and all) and the endpoints;
    # never a connection, never a user of this process.
    import pickle

    import pytest_apex.executors.ray_isolation  # noqa: F401  (teaches pickle the description)
    from pytest_apex.adapters.factory import DescribedUsers
    from pytest_apex.app import load_description
    from tests.plugin.fake_rest_app import DESCRIPTION

    description = load_description(DESCRIPTION, "fake")
    users = DescribedUsers(description, {"api": "http://127.0.0.1:9"}, "run1")
    users._sessions.append(object())  # type: ignore[arg-type]  # a user made here
    copy = pickle.loads(pickle.dumps(users))
    assert copy.description == description
    assert copy.description.resources[0].create == {"title": "{canary}"}
    assert (copy.endpoints, copy.run, copy._sessions, copy._adapter) == (
        {"api": "http://127.0.0.1:9"},
        "run1",
        [],
        None,
    )
