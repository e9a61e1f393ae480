"""Each fault switch of the reference stack really changes its behaviour.

These run on a second stack (`fault_stack`), so flipping switches never disturbs tests on
the clean one. Every test first shows the clean behaviour on the same stack, then the
fault, so a switch that does nothing fails here.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
import uuid

import httpx
import jwt
import pytest

from pytest_apex.adapters.apex import ApexAdapter
from tests.conftest import concurrent_agent_runs
from tests.stack.conftest import isolation_violations, login
from tests.stack.test_services import run_agent

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


def test_shared_context_misroutes_events_under_concurrency(fault_stack, http):
    violations = "SELECT count(*) FROM isolation_violations"
    clean = fault_stack.switch()
    runs = asyncio.run(concurrent_agent_runs(clean, users=20))
    assert all(r.completed and not r.foreign for r in runs)
    assert fault_stack.sql(violations) == "0"
    assert set(isolation_violations(http, clean["backend"]).values()) == {0.0}
    faulty = fault_stack.switch("shared_context")
    try:
        # A run whose terminal event went to another user waits out its timeout: 8 s is
        # well past a clean run's second, and keeps the lost runs from costing 30 s.
        runs = asyncio.run(concurrent_agent_runs(faulty, users=20, timeout=8))
        misrouted = [r for r in runs if r.foreign or not r.completed]
        assert misrouted, "20 concurrent runs under shared_context all stayed isolated"
        foreign_users = {e["payload"]["user_id"] for r in runs for e in r.foreign}
        assert foreign_users - {None}
        # The database keeps the evidence: one agent instance recorded under many users.
        assert int(fault_stack.sql(violations)) >= 1
        # And the process counted both as they happened (what ApexIsolationViolation reads).
        counted = isolation_violations(http, faulty["backend"])
        assert counted["agent_instance"] >= 1, counted
        assert counted["event_delivery"] >= 1, counted
    finally:
        fault_stack.reset_data()


def test_broadcast_events_reach_every_socket(fault_stack, http):
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

    clean = fault_stack.switch()
    assert asyncio.run(scenario(clean)) == 0
    assert isolation_violations(http, clean["backend"])["event_delivery"] == 0
    faulty = fault_stack.switch("broadcast_events")
    leaked = asyncio.run(scenario(faulty))
    assert leaked >= 5
    # Every event handed to Bob's socket was counted as it was delivered.
    assert isolation_violations(http, faulty["backend"])["event_delivery"] >= leaked


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


def _thread_with_message(http: httpx.Client, backend: str, user, text: str) -> str:
    thread = http.post(f"{backend}/api/threads", json={"title": "t"}, headers=user.auth).json()
    posted = http.post(
        f"{backend}/api/threads/{thread['id']}/messages", json={"content": text}, headers=user.auth
    )
    assert posted.status_code == 201, posted.text
    return thread["id"]


def test_preview_leak_shows_another_users_message_in_a_preview(fault_stack, http):
    """Alice lists her threads, then Bob lists his: Bob's first thread carries the start of
    Alice's latest message (a truncated, nested leak, no full token of hers)."""
    for faults, leaks in (((), False), (("preview_leak",), True)):
        endpoints = fault_stack.switch(*faults)
        backend = endpoints["backend"]
        alice, bob = login(http, endpoints["auth"]), login(http, endpoints["auth"])
        secret = f"alice-{uuid.uuid4().hex} private words"
        _thread_with_message(http, backend, alice, secret)
        http.get(f"{backend}/api/threads", headers=alice.auth)
        bobs = _thread_with_message(http, backend, bob, "bob's own note")
        (listed,) = http.get(f"{backend}/api/threads", headers=bob.auth).json()
        assert listed["id"] == bobs  # his thread: only the preview is someone else's
        expected = secret[:32] if leaks else "bob's own note"
        assert listed["last_message_preview"] == expected, faults


def test_page_cache_serves_another_users_second_page(fault_stack, http):
    """Alice reads her page 2; Bob asking for page 2 with the same limit gets hers (his
    first page stays his: only the later pages lost the user from their key)."""
    for faults, leaks in (((), False), (("page_cache",), True)):
        endpoints = fault_stack.switch(*faults)
        threads = endpoints["backend"] + "/api/threads"
        alice, bob = login(http, endpoints["auth"]), login(http, endpoints["auth"])
        owned = {}
        for user in (alice, bob):
            for i in range(3):
                http.post(threads, json={"title": f"{user.email} {i}"}, headers=user.auth)
            owned[user.id] = {t["id"] for t in http.get(threads, headers=user.auth).json()}
        page2 = {"limit": 2, "offset": 2}
        alices = http.get(threads, params=page2, headers=alice.auth).json()
        assert len(alices) == 1  # her oldest thread: 3 threads, page 2 of 2
        assert {t["id"] for t in alices} <= owned[alice.id]
        for _ in range(2):  # a repeated read: the shared entry keeps answering
            bobs = http.get(threads, params=page2, headers=bob.auth).json()
            seen = {t["id"] for t in bobs}
            assert len(seen) == 1, (faults, bobs)
            assert (seen <= owned[alice.id]) is leaks, (faults, bobs)
            assert (seen <= owned[bob.id]) is not leaks, (faults, bobs)
        first = http.get(threads, params={"limit": 2}, headers=bob.auth).json()
        assert {t["id"] for t in first} <= owned[bob.id], faults


def _client_on(gateway: str, instance: str | None = None) -> tuple[httpx.Client, str]:
    """A client whose (kept-alive) connection through the gateway landed on `instance`
    (any, when None); the gateway picks a replica per connection."""
    for _ in range(10):
        client = httpx.Client(base_url=gateway, timeout=30.0)
        landed = client.get("/health/live").json()["instance"]
        if instance in (None, landed):
            return client, landed
        client.close()
    raise AssertionError(f"10 connections through the gateway, none reached {instance}")


def _finished_run(fault_stack, backend: str, user) -> str:
    """Run the agent once for `user` (over the socket); its run id once the database says
    the run ended. Read there, not over REST, so that no replica caches it yet."""
    thread = httpx.post(
        f"{backend}/api/threads", json={"title": "run"}, headers=user.auth, timeout=30
    ).json()
    events = run_agent(backend, user, thread["id"], f"run of {user.email}")
    assert events[-1]["type"] == "agent_completed", events
    run_id = events[-1]["run_id"]
    ended = f"SELECT completed_at IS NOT NULL FROM agent_executions WHERE run_id = '{run_id}'"
    deadline = time.monotonic() + 30
    while fault_stack.sql(ended) != "t":
        assert time.monotonic() < deadline, f"run {run_id} never recorded its end"
        time.sleep(0.1)  # polling interval of a condition with a deadline
    return run_id


def _replica_ids_witness(fault_stack, faults: tuple[str, ...], topology: str = "") -> str:
    """Alice reads her finished run through one connection, Bob his through another (with
    two replicas: on the other replica), then Alice reads hers again on her connection.
    The user id of the run she is shown the second time."""
    endpoints = fault_stack.switch(*faults, topology=topology)
    backend = endpoints["backend"]
    with httpx.Client(timeout=30.0) as http:
        alice, bob = login(http, endpoints["auth"]), login(http, endpoints["auth"])
    runs = {alice.id: _finished_run(fault_stack, backend, alice)}
    runs[bob.id] = _finished_run(fault_stack, backend, bob)
    alice_http, alice_on = _client_on(backend)
    bob_http, bob_on = _client_on(backend, None if not topology else _other(backend, alice_on))
    with contextlib.closing(alice_http), contextlib.closing(bob_http):

        def read(client: httpx.Client, on: str, user) -> dict:
            # Still the same connection (the same replica) as when it was picked.
            assert client.get("/health/live").json()["instance"] == on
            answer = client.get(f"/api/runs/{runs[user.id]}", headers=user.auth)
            assert answer.status_code == 200, answer.text
            return answer.json()

        assert read(alice_http, alice_on, alice)["user_id"] == alice.id  # cached by her replica
        assert read(bob_http, bob_on, bob)["user_id"] == bob.id  # cached by his
        shown = read(alice_http, alice_on, alice)["user_id"]
        return {alice.id: "alice", bob.id: "bob"}.get(shown, shown)


def _other(gateway: str, instance: str) -> str:
    """The replica behind the gateway that is not `instance`."""
    for _ in range(10):
        with httpx.Client(base_url=gateway, timeout=30.0) as client:
            landed = client.get("/health/live").json()["instance"]
        if landed != instance:
            return landed
    raise AssertionError(f"10 connections through the gateway all reached {instance}")


def test_replica_ids_mixes_run_status_between_replicas(fault_stack):
    """Run status cached under a process-local number: harmless with one backend, another
    user's run once two replicas hand out the same numbers."""
    try:
        assert _replica_ids_witness(fault_stack, ("replica_ids",)) == "alice"
        assert _replica_ids_witness(fault_stack, (), topology="two_backends") == "alice"
        assert _replica_ids_witness(fault_stack, ("replica_ids",), "two_backends") == "bob"
    finally:
        fault_stack.switch()
        fault_stack.reset_data()
