"""The health engines on plain values: what they count as pass, fail and "not reported".

No stack needed; these pin the judgements the suite's criteria rest on (a missing
dependency check fails, a setting the backend does not report fails, `*` counts as allowing
an origin), so a refactor cannot quietly turn a failure into a pass.
"""

from __future__ import annotations

import math
from typing import Any

import httpx
import pytest

from pytest_apex.app.model import HealthRoute, PromisedSetting
from pytest_apex.health.config import compare_in_effect, compare_settings
from pytest_apex.health.http_posture import CorsAnswer, foreign_origins, security_header_problems
from pytest_apex.health.metrics import MetricsUnreadable, missing_series
from pytest_apex.health.posture import runs_as_root
from pytest_apex.health.probes import HealthProbe, ResponseTime, probe_repeatedly, timed_probe
from pytest_apex.reference import reference_description
from pytest_apex.targets.base import ContainerInfo


def _ready(checks: dict[str, list[dict[str, str]]], code: int = 200) -> HealthProbe:
    status = "fail" if code >= 500 else "pass"
    return HealthProbe(
        "http://x/health/ready",
        code,
        "application/health+json",
        0.01,
        {"status": status, "checks": checks},
    )


def test_dependency_status_is_the_worst_check_and_missing_when_unreported() -> None:
    probe = _ready(
        {
            "postgres:responseTime": [{"status": "pass"}],
            "postgres:connections": [{"status": "fail", "output": "pool exhausted"}],
            "redis:responseTime": [{"status": "pass"}],
        },
        code=503,
    )
    assert probe.dependency_status("postgres") == "fail"
    assert probe.dependency_status("redis") == "pass"
    assert probe.dependency_status("kafka") == ""  # not reported: the suite fails it
    assert not probe.ok
    assert "postgres:connections failed (pool exhausted)" in probe.describe_failure()


def test_health_json_conformance_names_what_is_wrong() -> None:
    plain = HealthProbe("http://x/health", 200, "application/json", 0.01, {"status": "ok"})
    assert not plain.follows_health_json
    problem = plain.describe_conformance()
    assert "Content-Type application/json" in problem
    assert "'ok'" in problem
    assert _ready({}).describe_conformance() == ""


def _promised() -> tuple[PromisedSetting, ...]:
    config = reference_description().services["backend"].config
    assert config is not None
    return config.settings


def test_config_in_effect_is_read_at_the_described_paths() -> None:
    body = {
        "database": {
            "pool_min_size": 20,
            "pool_max_size": 50,
            "acquire_timeout_seconds": 30.0,
            "recycle_seconds": 1800.0,
        },
        "websocket": {"heartbeat_seconds": 30, "max_message_bytes": 4096},
        "isolation": {"request_isolation": False},
        "http": {"cors_allowed_origin": "http://localhost:3000"},
    }
    results = {c.name: c for c in compare_in_effect(_promised(), body)}
    assert results["db_pool_max_size"].as_numbers() == (50, 50)
    assert results["db_pool_timeout_s"].as_numbers() == (30, 30)
    assert results["ws_max_message_bytes"].as_numbers() == (4096, 8192)
    assert results["request_isolation"].as_numbers() == (0, 1)
    assert results["cors_allowed_origin"].as_numbers() == (1, 1)
    observed, threshold = results["ws_rate_limit_per_minute"].as_numbers()  # not reported
    assert math.isnan(observed)
    assert threshold == 100
    assert "not reported" in results["ws_rate_limit_per_minute"].describe()


def test_the_reference_promises_are_the_reports_values() -> None:
    promised = {s.name: s.expect for s in _promised()}
    assert (promised["db_pool_size"], promised["db_pool_max_size"]) == (20, 50)
    assert (promised["db_pool_timeout_s"], promised["db_pool_recycle_s"]) == (30, 1800)
    assert (promised["ws_heartbeat_s"], promised["ws_connection_timeout_s"]) == (30, 900)
    redis = reference_description().services["redis"].settings
    assert redis["maxmemory-policy"] == "allkeys-lru"


def test_data_store_settings_compare_as_numbers_and_words() -> None:
    compared = {
        c.name: c
        for c in compare_settings(
            {"maxmemory": 524288000, "maxmemory-policy": "allkeys-lru", "missing": 1},
            {"maxmemory": "0", "maxmemory-policy": "allkeys-lru"},
        )
    }
    assert compared["maxmemory"].as_numbers() == (0, 524288000)
    assert compared["maxmemory-policy"].as_numbers() == (1, 1)
    assert math.isnan(compared["missing"].as_numbers()[0])


@pytest.mark.parametrize(
    ("allow_origin", "allowed"),
    [("https://evil.example", True), ("*", True), (None, False), ("http://localhost:3000", False)],
)
def test_cors_answer_counts_a_wildcard_as_allowing(allow_origin: str | None, allowed: bool) -> None:
    assert CorsAnswer("https://evil.example", "GET", 200, allow_origin).allowed is allowed


def test_foreign_origins_include_look_alikes_of_the_allowed_one() -> None:
    origins = foreign_origins("http://localhost:3000")
    assert "http://localhost:3000" not in origins
    assert {"null", "http://localhost:3000.evil.example", "https://localhost:3000"} <= set(origins)


def test_security_header_problems() -> None:
    assert (
        security_header_problems({"X-Content-Type-Options": "nosniff", "X-Frame-Options": "deny"})
        == []
    )
    assert security_header_problems({"x-frame-options": "SAMEORIGIN"}) == [
        "x-content-type-options missing",
        "x-frame-options is 'SAMEORIGIN', not 'DENY'",
    ]
    # CSP frame-ancestors 'none' is the same protection in its newer form, and wins.
    csp = {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "frame-ancestors 'none'"}
    assert security_header_problems(csp) == []
    lax = {**csp, "Content-Security-Policy": "default-src 'none'; frame-ancestors *"}
    assert security_header_problems(lax) == ["CSP frame-ancestors is '*', not 'none'"]
    assert security_header_problems({"X-Content-Type-Options": "nosniff"}) == [
        "x-frame-options missing (and no CSP frame-ancestors)"
    ]


def test_missing_series_needs_a_sample_not_just_a_type_line() -> None:
    text = (
        "# TYPE apex_ws_connections gauge\n"
        "# TYPE apex_db_pool_size gauge\n"
        "apex_db_pool_size 20.0\n"
        'apex_http_requests_total{route="/health",status="200"} 3.0\n'
    )
    assert missing_series(
        text, ["apex_ws_connections", "apex_db_pool_size", "apex_http_requests_total"]
    ) == ["apex_ws_connections"]


def test_a_label_value_holding_a_brace_does_not_hide_its_series() -> None:
    text = 'apex_http_requests_total{route="/api/threads/{id}",status="200"} 3.0\n'
    assert missing_series(text, ["apex_http_requests_total"]) == []


def test_a_histogram_family_is_found_by_its_own_name_and_by_each_sample_name() -> None:
    text = (
        "# TYPE apex_request_seconds histogram\n"
        'apex_request_seconds_bucket{le="0.5"} 2.0\n'
        'apex_request_seconds_bucket{le="+Inf"} 3.0\n'
        "apex_request_seconds_sum 1.2\n"
        "apex_request_seconds_count 3.0\n"
    )
    names = [
        "apex_request_seconds",
        "apex_request_seconds_bucket",
        "apex_request_seconds_sum",
        "apex_request_seconds_count",
    ]
    assert missing_series(text, names) == []


def test_a_page_that_is_not_prometheus_text_is_unreadable_not_empty() -> None:
    with pytest.raises(MetricsUnreadable):
        missing_series("<html>502 Bad Gateway</html>\n", ["apex_ws_connections"])


def _container(user: str) -> ContainerInfo:
    return ContainerInfo("backend", "c0ffee", "sha256:feed", "running", "healthy", user, 1, 1)


ROOT_USERS = ("", "root", "0", "00", "0:0", "root:root", "0:1000", "root:staff")


@pytest.mark.parametrize("user", ROOT_USERS)
def test_the_user_part_decides_root(user: str) -> None:
    assert runs_as_root(_container(user))


@pytest.mark.parametrize("user", ["apex", "10001", "10001:10001", "1000:0", "apex:root"])
def test_a_non_root_user_is_non_root_whatever_its_group(user: str) -> None:
    assert not runs_as_root(_container(user))


REFUSED = "http://127.0.0.1:9/health"  # the discard port: nothing listens, so it is refused


def test_a_refused_probe_is_no_answer_and_counts_as_its_whole_budget() -> None:
    with httpx.Client() as client:
        probes = probe_repeatedly(client, REFUSED, 5, budget_s=0.3)
    assert len(probes) == 1, "the first unanswered probe decides; the others are not sent"
    assert not probes[0].answered
    assert probes[0].seconds >= 0.3
    times = ResponseTime(tuple(probes))
    assert times.seconds >= 0.3 > 0.25  # fails any threshold below the budget
    assert "no answer within 0.3 s" in times.describe()


def test_the_slowest_probe_is_chosen_among_the_unanswered_ones_first() -> None:
    fast = HealthProbe("http://x/health", 200, "application/health+json", 0.9, {"status": "pass"})
    refused = HealthProbe("http://x/health/ready", 0, "", 0.6, error="no answer within 0.6 s")
    times = ResponseTime((fast, refused))
    assert times.slowest is refused
    assert times.seconds == 0.6
    assert math.isnan(ResponseTime(()).seconds)  # nothing probed is not fast


def test_a_service_that_answers_after_refusing_is_timed_until_its_answer() -> None:
    refusals = iter(range(2))

    def handler(request: httpx.Request) -> httpx.Response:
        if next(refusals, None) is not None:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(200, json={"status": "pass"})

    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        answer = timed_probe(client, "http://x/health", budget_s=5.0)
    assert answer.answered
    assert answer.ok
    assert answer.seconds >= 0.1  # two retry pauses of 50 ms


@pytest.mark.parametrize(
    ("route", "status", "body", "healthy"),
    [
        (HealthRoute("/h", "any-2xx"), 204, {}, True),
        (HealthRoute("/h", "any-2xx"), 503, {}, False),
        (HealthRoute("/h", "json-field", field="ok", expect=True), 200, {"ok": True}, True),
        (HealthRoute("/h", "json-field", field="ok", expect=True), 200, {"ok": False}, False),
        (HealthRoute("/h", "json-field", field="checks.db", expect="up"), 200, {}, False),
        (HealthRoute("/h", "json-field", field="ok", expect=True), 500, {"ok": True}, False),
        (HealthRoute("/h", "health+json"), 200, {"status": "warn"}, True),
        (HealthRoute("/h", "health+json"), 200, {"status": "fail"}, False),
    ],
)
def test_a_health_answer_is_judged_in_its_described_format(
    route: HealthRoute, status: int, body: dict[str, Any], healthy: bool
) -> None:
    probe = HealthProbe("http://svc/h", status, "application/json", 0.01, body)
    assert probe.healthy(route) is healthy
