"""The stack's Prometheus (compose service `prometheus`, fixtures/stack/prometheus/) and the
backend series its alert rules read, on the running clean stack.

The backend exports every series the rules assume (prometheus/README.md), each with the
type and labels the rules expect; Prometheus is ready, finds the backend by DNS and scrapes
it, holds the request-duration histogram after some requests, and has loaded every alert of
the rules file. Prometheus scrapes every 2 s: each wait below is for a condition, with a
deadline, never a fixed sleep.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import httpx
import pytest
import yaml

from tests.conftest import COMPOSE_FILE, STACK_DIR
from tests.stack.conftest import isolation_violations, metric_families

RULES = STACK_DIR / "prometheus" / "rules" / "apex.rules.yml"
DURATION_BUCKETS = [
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.0,
    3.0,
    5.0,
    10.0,
    float("inf"),
]
# Long enough for a couple of DNS refreshes and scrapes (2 s each) on a busy machine.
DEADLINE_S = 60.0

T = TypeVar("T")


def eventually(probe: Callable[[], T | None], what: str, deadline_s: float = DEADLINE_S) -> T:
    """`probe()`'s first answer that is not None, asked again until the deadline."""
    deadline = time.monotonic() + deadline_s
    last: Any = None
    while True:
        try:
            found = probe()
        except httpx.HTTPError as exc:  # Prometheus or the backend not answering yet
            found, last = None, exc
        if found is not None:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"{what} within {deadline_s:.0f} s (last error: {last!r})")
        time.sleep(0.25)  # between polls of a condition, not a wait for a state


def _api(http: httpx.Client, prometheus: str, path: str, **params: str) -> Any:
    response = http.get(f"{prometheus}/api/v1/{path}", params=params)
    response.raise_for_status()
    body = response.json()
    assert body["status"] == "success", body
    return body["data"]


def _memory_limit_bytes(service: str) -> int:
    """The compose file's memory limit of `service` ("768M") in bytes."""
    spec = yaml.safe_load(COMPOSE_FILE.read_text())["services"][service]
    limit = str(spec["deploy"]["resources"]["limits"]["memory"])
    units = {"K": 2**10, "M": 2**20, "G": 2**30}
    return int(limit[:-1]) * units[limit[-1].upper()] if limit[-1].isalpha() else int(limit)


# --------------------------------------------------------------- the backend's series


def test_backend_exports_the_series_the_rules_read(http, apex_endpoints):
    backend = apex_endpoints["backend"]
    assert http.get(f"{backend}/health/live").status_code == 200
    families = metric_families(http, backend)
    types = {name: families[name].type for name in families}
    assert types["http_request_duration_seconds"] == "histogram"
    assert types["apex_isolation_violations"] == "counter"
    assert types["apex_process_memory_limit_bytes"] == "gauge"
    assert types["apex_db_server_connections"] == "gauge"
    # The series that were there before keep their names and types.
    assert types["apex_http_requests"] == "counter"
    assert types["apex_process_resident_memory_bytes"] == "gauge"


def test_request_durations_are_by_method_and_route_template(http, apex_endpoints, new_user):
    backend = apex_endpoints["backend"]
    user = new_user()
    thread = http.post(f"{backend}/api/threads", json={"title": "timed"}, headers=user.auth)
    assert thread.status_code == 201, thread.text
    assert http.get(f"{backend}/api/threads/{thread.json()['id']}", headers=user.auth).is_success
    family = metric_families(http, backend)["http_request_duration_seconds"]
    buckets: dict[tuple[str, str], list[float]] = {}
    for sample in family.samples:
        if sample.name.endswith("_bucket"):
            key = (sample.labels["method"], sample.labels["route"])
            buckets.setdefault(key, []).append(float(sample.labels["le"]))
    # The template, never the thread's id: one series per route, not per thread.
    assert ("GET", "/api/threads/{thread_id}") in buckets, sorted(buckets)
    assert ("POST", "/api/threads") in buckets, sorted(buckets)
    assert not [route for _, route in buckets if thread.json()["id"] in route]
    for key, bounds in buckets.items():
        assert sorted(bounds) == DURATION_BUCKETS, key


def test_isolation_violations_start_at_zero_for_every_kind(http, apex_endpoints):
    counted = isolation_violations(http, apex_endpoints["backend"])
    assert counted == {"event_delivery": 0.0, "agent_instance": 0.0, "db_view": 0.0}


def test_memory_limit_is_the_containers(http, apex_endpoints):
    family = metric_families(http, apex_endpoints["backend"])["apex_process_memory_limit_bytes"]
    (sample,) = family.samples
    assert sample.value == _memory_limit_bytes("backend")


def test_database_connections_count_every_client_of_the_database(http, apex_endpoints):
    def counted() -> tuple[float, float] | None:
        families = metric_families(http, apex_endpoints["backend"])
        server = families.get("apex_db_server_connections")
        if server is None or not server.samples:
            return None  # before the first refresh
        (pool,) = families["apex_db_pool_size"].samples
        # The backend's own pool is among the database's clients (auth has its own too).
        return (
            (server.samples[0].value, pool.value) if server.samples[0].value >= pool.value else None
        )

    server, pool = eventually(counted, "apex_db_server_connections reached the pool's size")
    assert server >= pool >= 1


# --------------------------------------------------------------- Prometheus itself


@pytest.fixture(scope="module")
def prometheus(http, apex_endpoints) -> str:
    url = apex_endpoints["prometheus"]
    eventually(
        lambda: True if http.get(f"{url}/-/ready").status_code == 200 else None,
        "Prometheus answered /-/ready",
    )
    return url


def test_prometheus_scrapes_the_backend(http, prometheus):
    def backend_up() -> list[dict] | None:
        targets = _api(http, prometheus, "targets", state="active")["activeTargets"]
        backends = [t for t in targets if t["labels"]["job"] == "backend"]
        return backends if backends and all(t["health"] == "up" for t in backends) else None

    (target,) = eventually(backend_up, "the backend target is up")
    assert target["labels"]["instance"].endswith(":8000"), target
    assert target["scrapePool"] == "backend"


def test_prometheus_holds_the_request_duration_histogram(http, prometheus, apex_endpoints):
    backend = apex_endpoints["backend"]
    for _ in range(5):
        assert http.get(f"{backend}/health/live").status_code == 200
    # What the backend itself counted by now, this test's requests included.
    (served,) = [
        s.value
        for s in metric_families(http, backend)["http_request_duration_seconds"].samples
        if s.name.endswith("_count") and s.labels == {"method": "GET", "route": "/health/live"}
    ]
    assert served >= 5
    query = 'http_request_duration_seconds_bucket{job="backend",route="/health/live"}'

    def scraped() -> list[dict] | None:
        result = _api(http, prometheus, "query", query=query)["result"]
        inf = [float(s["value"][1]) for s in result if s["metric"]["le"] == "+Inf"]
        return result if inf and inf[0] >= served else None

    found = eventually(scraped, f"{query} held the backend's {served:.0f} requests")
    assert {float(s["metric"]["le"]) for s in found} == set(DURATION_BUCKETS)
    assert {s["metric"]["method"] for s in found} == {"GET"}


def test_prometheus_loaded_every_alert_of_the_rules_file(http, prometheus):
    expected = {
        rule["alert"]
        for group in yaml.safe_load(RULES.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    assert len(expected) == 9
    groups = _api(http, prometheus, "rules", type="alert")["groups"]
    loaded = [rule for group in groups for rule in group["rules"]]
    assert {rule["name"] for rule in loaded} == expected
    assert not [rule for rule in loaded if rule.get("lastError")], loaded
    assert {group["file"].rpartition("/")[2] for group in groups} == {RULES.name}
