"""The REST isolation scenario with its users dealt over the three-node cluster.

The in-memory notebook app (`tests.plugin.fake_rest_app`) is served over HTTP on 127.0.0.1;
every share of the users runs in its own actor, one per node, and reaches it from there.

- Clean: every user of every share set up, every control held, every probe refused, and no
  breach: the run judges what a run in one process judges.
- A planted leak between users on different nodes is caught and attributed to its owner.
- A share whose actor is killed mid-run drops out naming its node; the run is inconclusive.
- Nothing the run made outlives it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from typing import Any, Final

import httpx
import pytest

from pytest_apex.adapters.factory import DescribedUsers
from pytest_apex.app import load_description
from pytest_apex.executors.ray_isolation import SHARE_LABEL, rest_isolation_on_ray
from pytest_apex.isolation.rest_scenario import RestScenarioResult, RestScenarioSpec, plans_for
from pytest_apex.settings import Thresholds
from pytest_apex.suites.isolation_checks import rest_checks
from tests.plugin.fake_load import serving_in_a_thread
from tests.plugin.fake_rest_app import DESCRIPTION, FakeRestApp, served
from tests.ray.conftest import NEEDS_RAY, NODES, ray

pytestmark = NEEDS_RAY

USERS: Final = 9  # three a node
KILL_WAIT_S: Final = 60.0


def _on_ray(
    ray_cluster: str, app: FakeRestApp, before: Callable[[httpx.Request], None] | None = None
) -> tuple[RestScenarioResult, str]:
    description = load_description(DESCRIPTION, "fake")
    spec = RestScenarioSpec(users=USERS, resources=plans_for(description.resources), seed=11)
    with serving_in_a_thread(lambda: served(app, before)) as url:
        users = DescribedUsers(description, {"api": url}, "ray")
        return asyncio.run(rest_isolation_on_ray(spec, users, address=ray_cluster, shares=NODES))


def _share(user: int) -> int:
    return user % NODES  # users are dealt over the shares like cards


def _leftovers() -> list[Any]:
    named = ray.util.list_named_actors(all_namespaces=True)
    return [a for a in named if a["name"].startswith("apex-isolation-")]


@pytest.fixture
def nothing_left(ray_cluster: str) -> Iterator[None]:
    yield
    from ray.util import placement_group_table

    assert _leftovers() == []
    assert {pg["state"] for pg in placement_group_table().values()} <= {"REMOVED"}


@pytest.mark.usefixtures("nothing_left")
def test_users_on_three_nodes_see_only_their_own_data(ray_cluster: str) -> None:
    result, placed = _on_ray(ray_cluster, FakeRestApp())
    assert placed == (
        f"isolation executor ray: {NODES} shares on {NODES} nodes, STRICT_SPREAD (one per node)"
    )
    assert result.users_ready == USERS, result.describe_errors()
    assert result.lost == []
    assert result.breaches == []
    assert result.own_listed == result.own_expected_in_lists > 0
    assert result.probes_refused == result.probes_sent > 0
    checks = rest_checks(result, Thresholds.defaults(), USERS)
    assert [c.name for c in checks if c.inconclusive] == []


@pytest.mark.usefixtures("nothing_left")
@pytest.mark.parametrize(("bug", "channel"), [("list_leak", "list"), ("idor", "probe")])
def test_a_leak_between_users_on_different_nodes_is_caught(
    ray_cluster: str, bug: str, channel: str
) -> None:
    result, _ = _on_ray(ray_cluster, FakeRestApp(bug))
    across = [
        b
        for b in result.breaches
        if b.channel == channel and b.owner is not None and _share(b.viewer) != _share(b.owner)
    ]
    assert across, result.breach_counts()
    assert all(b.owner is not None for b in result.breaches)
    assert " saw data of user" in result.describe_breaches([channel])


@pytest.mark.usefixtures("nothing_left")
def test_a_share_killed_mid_run_makes_the_run_inconclusive_naming_its_node(
    ray_cluster: str,
) -> None:
    # The first read of an item by id (the rounds have begun) holds the server until share
    # 1's actor has been killed; then every request goes on.
    killed = threading.Event()

    def kill_share_1(request: httpx.Request) -> None:
        if killed.is_set() or request.method != "GET" or request.url.path.count("/") != 2:
            return
        victim = next(a for a in _leftovers() if a["name"].endswith("-1"))
        ray.kill(ray.get_actor(victim["name"], namespace=victim["namespace"]))
        killed.set()

    result, _ = _on_ray(ray_cluster, FakeRestApp(), kill_share_1)
    assert killed.is_set()
    assert len(result.lost) == 1, result.lost
    assert result.lost[0].startswith(f"{SHARE_LABEL} 1 on node 127.0.0.1 (")
    assert " died during " in result.lost[0]
    # The other shares finished: their users' outcomes are there, none of share 1's.
    assert set(result.labels) == {u for u in range(USERS) if _share(u) != 1}
    checks = {c.name: c for c in rest_checks(result, Thresholds.defaults(), USERS)}
    for name in ("cross_user_listings", "cross_user_resource_access", "concurrent_users"):
        assert f"{SHARE_LABEL} 1 on node" in checks[name].inconclusive, name
