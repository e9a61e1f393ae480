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
from tests.stack.conftest import login

pytestmark = pytest.mark.xdist_group("fault-stack")


def _rss_bytes(http: httpx.Client, backend: str) -> float:
    for line in http.get(f"{backend}/metrics").text.splitlines():
        if line.startswith("apex_process_resident_memory_bytes "):
            return float(line.split()[1])
    raise AssertionError("apex_process_resident_memory_bytes missing from /metrics")


async def _concurrent_runs(endpoints: dict[str, str], users: int, timeout: float = 30):
    adapter = ApexAdapter(endpoints)
    try:
        tag = uuid.uuid4().hex[:6]
        sessions = await asyncio.gather(
            *(adapter.login(f"f{i}-{tag}@apex.test") for i in range(users))
        )
        threads = await asyncio.gather(*(s.create_thread("t") for s in sessions))
        for s in sessions:
            await s.connect()
        runs = await asyncio.gather(
            *(
                s.run_agent(t["id"], f"secret request of {s.email}", timeout)
                for s, t in zip(sessions, threads, strict=True)
            )
        )
        await asyncio.gather(*(s.close() for s in sessions))
        return sessions, runs
    finally:
        await adapter.aclose()


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
    clean = fault_stack.switch()
    _, runs = asyncio.run(_concurrent_runs(clean, users=20))
    assert all(r.completed and not r.foreign for r in runs)
    faulty = fault_stack.switch("shared_context")
    _sessions, runs = asyncio.run(_concurrent_runs(faulty, users=20))
    misrouted = [r for r in runs if r.foreign or not r.completed]
    assert misrouted, "20 concurrent runs under shared_context all stayed isolated"
    foreign_users = {e["payload"]["user_id"] for r in runs for e in r.foreign}
    assert foreign_users - {None}


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
        asyncio.run(_concurrent_runs(endpoints, users=5))  # warm up allocations
        before = _rss_bytes(http, endpoints["backend"])
        asyncio.run(_concurrent_runs(endpoints, users=40))
        growth[faults] = _rss_bytes(http, endpoints["backend"]) - before
    mib = 1024 * 1024
    assert growth[("memory_leak",)] > 30 * mib, growth
    assert growth[()] < 15 * mib, growth
