"""The Ray executor on a real three-node cluster, against a local endpoint.

- One actor per node (STRICT_SPREAD), every stage's merged request count the sum of the
  actors' own, and the merged p95 exactly that of one histogram fed every sample.
- Killing one actor during a stage makes that stage (and every later one) inconclusive,
  naming the node; the other actors' results are still there.
- An address that does not answer stops the run at once, naming it.
- Nothing the run made outlives it: no actor, no placement group.
- Every process of the cluster, and of a run's own instance, listens on 127.0.0.1 only.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from pytest_apex.executors import RayClusterUnreachable, RayExecutor, merge_shares
from pytest_apex.load.engine import EngineSettings
from pytest_apex.load.http import HttpSessionFactory
from pytest_apex.load.measure import merged_latency, new_histogram, percentile_s
from pytest_apex.load.stages import ClosedStage
from pytest_apex.load.verdict import Threshold, judge_stage
from tests.plugin.fake_load import serving_in_a_thread
from tests.ray.conftest import NEEDS_RAY, NODES, ray

pytestmark = NEEDS_RAY

SETTINGS = EngineSettings(window_s=0.5, grace_s=1.0, progress_interval_s=0.2)
PLAN = [ClosedStage(users=6, duration_s=2.0), ClosedStage(users=9, duration_s=2.0)]


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with serving_in_a_thread() as url:
        yield url


def _alive_apex_actors() -> list[dict[str, str]]:
    """The named actors of pytest-apex still alive on the cluster (names and namespaces)."""
    named = ray.util.list_named_actors(all_namespaces=True)
    return [a for a in named if a["name"].startswith("apex-")]


def test_one_actor_per_node_and_the_merge_is_exact(ray_cluster: str, endpoint: str) -> None:
    lines: list[str] = []
    executor = RayExecutor(ray_cluster, NODES)
    shares = executor.run_shares(
        PLAN, HttpSessionFactory(endpoint), settings=SETTINGS, writer=lambda s, f: lines.append(s)
    )
    assert shares.placement == (
        f"load executor ray: {NODES} workers on {NODES} nodes, STRICT_SPREAD (one per node)"
    )
    assert len(set(shares.nodes)) == NODES, shares.nodes  # each on a node of its own
    assert not shares.lost
    merged = merge_shares(PLAN, shares.delivered, shares.lost, SETTINGS.window_s).stages
    for index, stage in enumerate(merged):
        parts = [stages[index] for stages in shares.delivered.values()]
        assert all(p.completed > 0 for p in parts), [p.completed for p in parts]
        assert stage.completed == sum(p.completed for p in parts)
        assert stage.requests == sum(p.requests for p in parts)
        assert stage.target == PLAN[index].target
        assert stage.workers == NODES
        # One histogram fed every sample every actor measured, value by value.
        single = new_histogram()
        for part in parts:
            for item in merged_latency(part.ops.values()).get_recorded_iterator():
                single.record_value(item.value_iterated_to, item.count_added_in_this_iter_step)
        whole = merged_latency(stage.ops.values())
        assert whole.get_total_count() == single.get_total_count() == stage.ok
        for quantile in (50, 95, 99):
            assert percentile_s(whole, quantile) == percentile_s(single, quantile)
    assert any(line.startswith("load stage 2/2") for line in lines), lines
    assert not _alive_apex_actors()


def test_an_actor_killed_during_a_stage_makes_it_inconclusive_naming_its_node(
    ray_cluster: str, endpoint: str
) -> None:
    plan = [ClosedStage(users=6, duration_s=4.0), ClosedStage(users=6, duration_s=2.0)]
    lines: list[str] = []
    results: list[Any] = []
    executor = RayExecutor(ray_cluster, NODES)

    def run() -> None:
        results.append(
            executor.run_shares(
                plan,
                HttpSessionFactory(endpoint),
                settings=SETTINGS,
                writer=lambda s, f: lines.append(s),
            )
        )

    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    deadline = time.monotonic() + 60
    while not any(line.startswith("load stage 1/2") for line in lines):
        assert time.monotonic() < deadline, f"stage 1 never started: {lines}"
        assert runner.is_alive(), "the run ended before its first stage"
        time.sleep(0.05)  # polling the live lines, a condition with a deadline
    (victim,) = [a for a in _alive_apex_actors() if a["name"].endswith("-1")]
    ray.kill(ray.get_actor(victim["name"], namespace=victim["namespace"]))
    runner.join(60)
    assert not runner.is_alive(), "the run did not end after one of its actors was killed"
    (shares,) = results
    assert list(shares.lost) == [1], shares.lost
    merged = merge_shares(plan, shares.delivered, shares.lost, SETTINGS.window_s).stages
    node = shares.nodes[1]
    assert merged[0].lost == (f"{shares.lost[1]} (during this stage)",)
    assert merged[1].lost == (f"{shares.lost[1]} (before this stage)",)
    assert node in merged[0].lost[0]
    (p95,) = judge_stage(merged[0], [Threshold("p95", "<", 2.0)])
    assert p95.outcome == "inconclusive"
    assert node in p95.inconclusive
    # The survivors' share of the stage was still measured and merged.
    assert merged[0].completed == sum(s[0].completed for s in shares.delivered.values() if s)
    assert merged[0].completed > 0
    assert not _alive_apex_actors()


def test_an_address_that_does_not_answer_stops_the_run_naming_it(endpoint: str) -> None:
    started = time.monotonic()
    with pytest.raises(RayClusterUnreachable, match=r"'127\.0\.0\.1:9' .*did not answer"):
        RayExecutor("127.0.0.1:9", 2).run(
            PLAN, HttpSessionFactory(endpoint), settings=SETTINGS, writer=lambda s, f: None
        )
    assert time.monotonic() - started < 10


def test_the_run_removes_its_placement_group(ray_cluster: str) -> None:
    from ray.util import placement_group_table

    states = {pg["state"] for pg in placement_group_table().values()}
    assert states <= {"REMOVED"}, placement_group_table()


def test_every_process_of_the_cluster_listens_on_loopback_only(ray_cluster: str) -> None:
    import psutil

    ours = {p.pid for p in psutil.Process().children(recursive=True)}
    listening = [
        (c.laddr.ip, c.laddr.port, c.pid)
        for c in psutil.net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN and c.pid in ours
    ]
    assert listening, "no process of the cluster listens at all: is this the cluster's pid?"
    loopback = ("127.0.0.1", "::1", "::ffff:127.0.0.1")
    assert [entry for entry in listening if entry[0] not in loopback] == [], listening


# A run with no --apex-ray-address, in a process of its own (this one is connected to the
# cluster): it starts a Ray instance for the run, on 127.0.0.1, and shuts it down after.
OWN_INSTANCE = """
import json, sys
import psutil
from pytest_apex.executors import RayExecutor
from pytest_apex.load.engine import EngineSettings
from pytest_apex.load.http import HttpSessionFactory
from pytest_apex.load.stages import ClosedStage
from tests.plugin.fake_load import serving_in_a_thread

seen = []
def writer(line, final):
    if line.startswith("load stage 1/1") and not final and not seen:
        me = psutil.Process()
        seen.extend(
            c.laddr.ip for c in psutil.net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN
            and c.pid in {p.pid for p in me.children(recursive=True)}
        )
with serving_in_a_thread() as url:
    result = RayExecutor("", 1).run(
        [ClosedStage(users=2, duration_s=1.5)], HttpSessionFactory(url),
        settings=EngineSettings(window_s=1, grace_s=1, progress_interval_s=0.2), writer=writer,
    )
left = [p.name() for p in psutil.Process().children(recursive=True)]
print(json.dumps({"completed": result.stages[0].completed, "listening": seen, "left": left}))
"""


def test_without_an_address_the_run_starts_its_own_instance_on_loopback_and_ends_it(
    ray_cluster: str,
) -> None:
    import json
    import subprocess
    import sys

    from tests.conftest import ROOT

    # Another instance is running on this machine (the cluster), and RAY_ADDRESS names it:
    # with no address, Ray itself would join it; the run must start its own all the same.
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["RAY_ADDRESS"] = ray_cluster
    done = subprocess.run(
        [sys.executable, "-c", OWN_INSTANCE],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["completed"] > 0
    assert figures["listening"], "no listening socket of the run's own instance was seen"
    assert set(figures["listening"]) <= {"127.0.0.1", "::1", "::ffff:127.0.0.1"}, figures
    assert figures["left"] == [], figures
