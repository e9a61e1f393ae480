"""The two_backends topology: the backend scaled to two replicas behind the gateway.

Brought up on the fault stack (`FaultStack.switch(topology="two_backends")`), which
recreates the app services with the override file and switches back afterwards.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import FaultStack, concurrent_agent_runs
from tests.stack.conftest import login
from tests.stack.test_services import AGENT_EVENTS, run_agent

pytestmark = pytest.mark.xdist_group("fault-stack")

CONNECTIONS = 12


@pytest.fixture(scope="module")
def two_backends(fault_stack: FaultStack) -> Iterator[dict[str, str]]:
    try:
        yield fault_stack.switch(topology="two_backends")
    finally:
        fault_stack.switch()


def _replicas(fault_stack: FaultStack) -> set[str]:
    """Host names of the running backend containers (a container's is its short id)."""
    return {
        c.container_id[:12]
        for c in fault_stack.target.containers()
        if c.service == "backend" and c.state == "running"
    }


def _instance_per_connection(gateway: str, connections: int) -> list[str]:
    seen = []
    for _ in range(connections):
        with httpx.Client(base_url=gateway, timeout=30.0) as client:  # a new connection each
            seen.append(client.get("/health/live").json()["instance"])
    return seen


def test_the_gateway_spreads_connections_over_both_replicas(fault_stack, two_backends):
    replicas = _replicas(fault_stack)
    assert len(replicas) == 2, replicas
    seen = collections.Counter(_instance_per_connection(two_backends["backend"], CONNECTIONS))
    assert set(seen) == replicas, seen
    # Round robin per connection: the docker health check's own connections take turns
    # too, so the split is near even rather than exact.
    assert min(seen.values()) >= CONNECTIONS // 4, seen


def test_the_gateway_follows_recreated_replicas(fault_stack, two_backends):
    """Replicas recreated behind its back (new containers, maybe new addresses) are
    reached again once the gateway re-resolves the name, within seconds."""
    before = _replicas(fault_stack)
    fault_stack.target.recreate(("backend",), {})
    after = _replicas(fault_stack)
    assert len(after) == 2, after
    assert after.isdisjoint(before), (before, after)
    deadline = time.monotonic() + 30
    while True:
        try:
            seen = set(_instance_per_connection(two_backends["backend"], 6))
        except httpx.HTTPError as exc:  # an old address, until the gateway re-resolves
            seen = {repr(exc)}
        if seen == after:
            break
        assert time.monotonic() < deadline, f"the gateway still reaches {seen}, not {after}"
        time.sleep(0.2)  # polling interval of a condition with a deadline


def test_one_connection_stays_on_one_replica(two_backends):
    with httpx.Client(base_url=two_backends["backend"], timeout=30.0) as client:
        seen = {client.get("/health/config").json()["instance"] for _ in range(10)}
    assert len(seen) == 1, seen


def test_rest_and_websocket_work_through_the_gateway(two_backends, fault_stack):
    backend = two_backends["backend"]
    with httpx.Client(timeout=30.0) as http:
        user = login(http, two_backends["auth"])
        thread = http.post(f"{backend}/api/threads", json={"title": "t"}, headers=user.auth)
        assert thread.status_code == 201, thread.text
        events = run_agent(backend, user, thread.json()["id"], "through the gateway")
        assert [e["type"] for e in events] == AGENT_EVENTS
        listed = http.get(f"{backend}/api/threads", headers=user.auth).json()
        assert [t["id"] for t in listed] == [thread.json()["id"]]
        # The frontend's proxy reaches the replicas too.
        front = two_backends["frontend"]
        assert http.get(f"{front}/api/threads", headers=user.auth).status_code == 200


def test_runs_of_users_on_both_replicas_stay_their_own(two_backends):
    """Events cross replicas through Redis: sockets spread over both replicas each get
    exactly their own run's events."""

    runs = asyncio.run(concurrent_agent_runs(two_backends, 6))
    assert all(r.completed and not r.foreign for r in runs), runs


def test_switching_back_leaves_one_backend_and_no_gateway(fault_stack, two_backends):
    fault_stack.switch()
    try:
        services = collections.Counter(
            c.service for c in fault_stack.target.containers() if c.state == "running"
        )
        assert services["backend"] == 1, services
        assert "gateway" not in services, services
        endpoints = fault_stack.endpoints()
        assert "gateway" not in endpoints
        assert httpx.get(endpoints["backend"] + "/health/live", timeout=30).status_code == 200
    finally:
        fault_stack.switch(topology="two_backends")  # the fixture's shape, for its teardown
