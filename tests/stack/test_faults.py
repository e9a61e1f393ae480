"""Each fault switch of the reference stack really changes its behaviour.

These run on a second stack (`fault_stack`), so flipping switches never disturbs tests on
the clean one. Every test first shows the clean behaviour on the same stack, then the
fault, so a switch that does nothing fails here.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import pytest

from pytest_apex.adapters.apex import ApexAdapter
from tests.conftest import concurrent_agent_runs
from tests.stack.conftest import login

pytestmark = pytest.mark.xdist_group("fault-stack")


def _rss_bytes(http: httpx.Client, backend: str) -> float:
    for line in http.get(f"{backend}/metrics").text.splitlines():
        if line.startswith("apex_process_resident_memory_bytes "):
            return float(line.split()[1])
    raise AssertionError("apex_process_resident_memory_bytes missing from /metrics")


@pytest.fixture(scope="module")
def http():
    with httpx.Client(timeout=60.0) as client:
        yield client


def test_unready_db_fails_readiness(fault_stack, http):
    clean = fault_stack.switch()
    assert http.get(clean["backend"] + "/health/ready").status_code == 200
    faulty = fault_stack.switch("unready_db")
    response = http.get(faulty["backend"] + "/health/ready")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "fail"
    assert body["checks"]["postgres:responseTime"][0]["status"] == "fail"
    assert http.get(faulty["backend"] + "/health").status_code == 200  # still alive


def test_idor_exposes_other_users_threads(fault_stack, http):
    for faults, expected in (((), 404), (("idor",), 200)):
        endpoints = fault_stack.switch(*faults)
        alice, bob = login(http, endpoints["auth"]), login(http, endpoints["auth"])
        thread = http.post(
            endpoints["backend"] + "/api/threads", json={"title": "private"}, headers=alice.auth
        ).json()
        seen = http.get(f"{endpoints['backend']}/api/threads/{thread['id']}", headers=bob.auth)
        assert seen.status_code == expected, (faults, seen.text)


def test_unscoped_cache_leaks_thread_lists(fault_stack, http):
    for faults, leaks in (((), False), (("unscoped_cache",), True)):
        endpoints = fault_stack.switch(*faults)
        alice, bob = login(http, endpoints["auth"]), login(http, endpoints["auth"])
        thread = http.post(
            endpoints["backend"] + "/api/threads", json={"title": "mine"}, headers=alice.auth
        ).json()
        http.get(endpoints["backend"] + "/api/threads", headers=alice.auth)  # fills the cache
        bob_ids = [
            t["id"]
            for t in http.get(endpoints["backend"] + "/api/threads", headers=bob.auth).json()
        ]
        assert (thread["id"] in bob_ids) is leaks, faults


def test_shared_context_misroutes_events_under_concurrency(fault_stack):
    violations = "SELECT count(*) FROM isolation_violations"
    clean = fault_stack.switch()
    runs = asyncio.run(concurrent_agent_runs(clean, users=20))
    assert all(r.completed and not r.foreign for r in runs)
    assert fault_stack.sql(violations) == "0"
    faulty = fault_stack.switch("shared_context")
    try:
        runs = asyncio.run(concurrent_agent_runs(faulty, users=20))
        misrouted = [r for r in runs if r.foreign or not r.completed]
        assert misrouted, "20 concurrent runs under shared_context all stayed isolated"
        foreign_users = {e["payload"]["user_id"] for r in runs for e in r.foreign}
        assert foreign_users - {None}
        # The database keeps the evidence: one agent instance recorded under many users.
        assert int(fault_stack.sql(violations)) >= 1
    finally:
        fault_stack.reset_data()


def test_broadcast_events_reach_every_socket(fault_stack):
    async def scenario(endpoints: dict[str, str]) -> int:
        adapter = ApexAdapter(endpoints)
        try:
            alice, bob = await asyncio.gather(
                adapter.login(f"a-{uuid.uuid4().hex}@apex.test"),
                adapter.login(f"b-{uuid.uuid4().hex}@apex.test"),
            )
            bob_ws = await bob.connect()
            thread = await alice.create_thread("t")
            run = await alice.run_agent(thread["id"], "alice only", 30)
            assert run.completed
            leaked = 0
            # Broadcast events were sent during alice's run; a short window drains them.
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline:
                try:
                    raw = await asyncio.wait_for(bob_ws.recv(), deadline - time.monotonic())
                except TimeoutError:
                    break
                leaked += '"alice only"' in raw
            await asyncio.gather(alice.close(), bob.close())
            return leaked
        finally:
            await adapter.aclose()

    assert asyncio.run(scenario(fault_stack.switch())) == 0
    assert asyncio.run(scenario(fault_stack.switch("broadcast_events"))) >= 5


def test_slow_responses_push_latency_over_two_seconds(fault_stack, http):
    for faults, slow in (((), False), (("slow_responses",), True)):
        endpoints = fault_stack.switch(*faults)
        user = login(http, endpoints["auth"])
        started = time.monotonic()
        assert http.get(endpoints["backend"] + "/api/threads", headers=user.auth).is_success
        assert (time.monotonic() - started > 2.0) is slow, faults


def test_error_burst_fails_a_few_percent(fault_stack, http):
    for faults, low, high in (((), 0, 0), (("error_burst",), 1, 10)):
        endpoints = fault_stack.switch(*faults)
        user = login(http, endpoints["auth"])
        statuses = [
            http.get(endpoints["backend"] + "/api/threads", headers=user.auth).status_code
            for _ in range(100)
        ]
        errors = sum(s >= 500 for s in statuses)
        assert low <= errors <= high, (faults, errors)


def test_memory_leak_grows_backend_memory(fault_stack, http):
    growth = {}
    for faults in ((), ("memory_leak",)):
        endpoints = fault_stack.switch(*faults)
        asyncio.run(concurrent_agent_runs(endpoints, users=5))  # warm up allocations
        before = _rss_bytes(http, endpoints["backend"])
        asyncio.run(concurrent_agent_runs(endpoints, users=40))
        growth[faults] = _rss_bytes(http, endpoints["backend"]) - before
    mib = 1024 * 1024
    assert growth[("memory_leak",)] > 30 * mib, growth
    assert growth[()] < 15 * mib, growth


@pytest.mark.parametrize("dependency", ["postgres", "redis"])
def test_readiness_fails_when_a_dependency_hangs(fault_stack, http, dependency):
    """Real failure paths, not a canned fault: a paused dependency (peers hang, as under a
    network partition) turns readiness to 503 naming it; unpaused, readiness recovers."""
    endpoints = fault_stack.switch()
    ready = endpoints["backend"] + "/health/ready"
    fault_stack.target.pause(dependency)
    try:
        response = http.get(ready)
        assert response.status_code == 503, response.text
        checks = response.json()["checks"]
        assert checks[f"{dependency}:responseTime"][0]["status"] == "fail", checks
        other = "redis" if dependency == "postgres" else "postgres"
        assert checks[f"{other}:responseTime"][0]["status"] == "pass", checks
        assert http.get(endpoints["backend"] + "/health").status_code == 200  # still alive
    finally:
        fault_stack.target.unpause(dependency)
    deadline = time.monotonic() + 30
    while http.get(ready).status_code != 200:
        assert time.monotonic() < deadline, f"readiness did not recover after {dependency} resumed"
        time.sleep(0.2)  # polling interval of a condition with a deadline
