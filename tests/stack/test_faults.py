"""Each fault switch of the reference stack really changes its behaviour.

These run on a second stack (`fault_stack`), so flipping switches never disturbs tests on
the clean one. Every test first shows the clean behaviour on the same stack, then the
fault, so a switch that does nothing fails here.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid

import httpx
import jwt
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


def _seconds(http: httpx.Client, url: str, **kwargs) -> float:
    started = time.monotonic()
    assert http.get(url, **kwargs).is_success, url
    return time.monotonic() - started


def test_slow_responses_push_latency_over_two_seconds(fault_stack, http):
    for faults, slow in (((), False), (("slow_responses",), True)):
        endpoints = fault_stack.switch(*faults)
        backend = endpoints["backend"]
        user = login(http, endpoints["auth"])
        assert (_seconds(http, backend + "/api/threads", headers=user.auth) > 2.0) is slow, faults
        # Readiness vouches for the slow path, so it is slow too; liveness never is.
        assert (_seconds(http, backend + "/health/ready") > 2.0) is slow, faults
        assert _seconds(http, backend + "/health/live") < 1.0, faults


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


def _alg_none(token: str) -> str:
    """The genuine token's claims, unsigned (`alg: none`)."""
    return jwt.encode(jwt.decode(token, options={"verify_signature": False}), None, "none")


def test_weak_jwt_accepts_unsigned_and_wrongly_signed_tokens(fault_stack, http):
    for faults, expected in (((), 401), (("weak_jwt",), 200)):
        endpoints = fault_stack.switch(*faults)
        user = login(http, endpoints["auth"])
        header, payload, _signature = user.token.split(".")
        forged = {
            "alg-none": _alg_none(user.token),
            "wrong-signature": f"{header}.{payload}.{'A' * 43}",
        }
        for kind, token in forged.items():
            for url in (endpoints["auth"] + "/auth/me", endpoints["backend"] + "/api/threads"):
                seen = http.get(url, headers={"Authorization": f"Bearer {token}"})
                assert seen.status_code == expected, (faults, kind, url, seen.text)
        genuine = http.get(endpoints["auth"] + "/auth/me", headers=user.auth)
        assert genuine.status_code == 200, (faults, genuine.text)


def test_open_cors_lets_any_origin_in(fault_stack, http):
    for faults, let_in in (((), False), (("open_cors",), True)):
        endpoints = fault_stack.switch(*faults)
        for url in (endpoints["auth"] + "/auth/me", endpoints["backend"] + "/api/threads"):
            answer = http.get(url, headers={"Origin": "https://evil.example"})
            granted = answer.headers.get("access-control-allow-origin") == "https://evil.example"
            assert granted is let_in, (faults, url, dict(answer.headers))
            own = http.get(url, headers={"Origin": "http://localhost:3000"})
            assert own.headers.get("access-control-allow-origin") == "http://localhost:3000"


def test_root_user_runs_the_app_services_as_root(fault_stack):
    for faults, uid in (((), "10001"), (("root_user",), "0")):
        fault_stack.switch(*faults)
        for service in fault_stack.APP_SERVICES:
            assert fault_stack.target.exec(service, "id", "-u").strip() == uid, (faults, service)
    fault_stack.switch()  # back to the image's user, for whatever runs next


@pytest.mark.parametrize(("user", "refused"), [("10001", True), ("0", False)])
def test_root_user_without_its_override_file_is_refused_not_ignored(fault_stack, user, refused):
    """Named in APEX_FAULTS but not applied (no override file, so not root), the switch is
    a settings error: the service would otherwise run the drill with the fault off."""
    # The image this stack runs (built from this tree), whatever the shared tag now names.
    image = next(c.image_id for c in fault_stack.target.containers() if c.service == "backend")
    check = "from apex_common.faults import parse_faults; print(parse_faults('root_user')[1])"
    printed = subprocess.run(
        ["docker", "run", "--rm", "--user", user, image, "/opt/venv/bin/python", "-c", check],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert ("faults/root_user.yml" in printed) is refused, printed
