"""Health suite: every service alive, ready and configured as promised (issue 4).

The staging report's original health script only sent `GET /health` to three ports. Each
test here is one line of what the report promised instead: probe the running deployment,
turn what was seen into criteria (`apex_criteria`), fail naming every criterion that did not
hold. Expected values come from overridable fixtures (pytest_apex/health/fixtures.py), never
from the files under test. Checks that need container access skip on external targets.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Final

import allure
import httpx
import pytest

from pytest_apex.adapters.base import AppAdapter, RawTokenSocket
from pytest_apex.fixtures import UserFactory
from pytest_apex.health import (
    auth_probe,
    controls,
    datastore,
    http_posture,
    metrics,
    posture,
    probes,
    tokens,
)
from pytest_apex.health.browser import AGENT_EVENT_TYPES, BrowserUnavailable, chat_round_trip
from pytest_apex.health.config import PromisedConfig, backend_config_in_effect, compare
from pytest_apex.recording import Check, CriteriaRecorder
from pytest_apex.settings import ApexSettings
from pytest_apex.targets.base import ContainerInfo, Target

pytestmark = pytest.mark.health

# One probe's time is noise; the slowest of a few is what a health check with a timeout meets.
PROBES_PER_ENDPOINT: Final = 5
HEALTH_RESPONSE: Final = "health_response_s_max"
MIN_ANSWER_BUDGET_S: Final = 1.0
# Routes that need a bearer token: where forged tokens must be refused and CORS is enforced.
PROTECTED_ROUTES: Final[Mapping[str, str]] = {"auth": "/auth/me", "backend": "/api/threads"}
BROWSER_TIMEOUT_S: Final = 30.0

ServiceMap = dict[str, tuple[str, probes.ServiceHealthSpec]]


# --- how a test turns what it saw into criteria -----------------------------------------------


def flag(ok: bool) -> int:
    return 1 if ok else 0


def endpoint(endpoints: Mapping[str, str], service: str) -> str:
    if service not in endpoints:
        pytest.skip(f"the target has no {service} endpoint (got {', '.join(sorted(endpoints))})")
    return endpoints[service]


@pytest.fixture(scope="module")
def services(
    apex_health_layout: Mapping[str, probes.ServiceHealthSpec], apex_endpoints: dict[str, str]
) -> ServiceMap:
    """The layout's services this target exposes: name -> (base URL, health spec)."""
    present = {
        name: (apex_endpoints[name], spec)
        for name, spec in apex_health_layout.items()
        if name in apex_endpoints
    }
    if not present:
        pytest.fail(
            f"none of the services {sorted(apex_health_layout)} has an endpoint "
            f"(the target gives {sorted(apex_endpoints)})"
        )
    return present


# --- liveness, readiness, health+json, response time, compose health ---------------------


def test_every_service_is_live(
    apex_criteria: CriteriaRecorder, health_http: httpx.Client, services: ServiceMap
) -> None:
    checks = []
    for name, (url, spec) in services.items():
        probe = probes.probe(health_http, url + spec.liveness)
        checks.append(
            Check(f"{name}.liveness", flag(probe.ok), 1, "==", detail=probe.describe_failure())
        )
    apex_criteria.judge(checks)


def test_every_service_is_ready_and_reports_each_dependency(
    apex_criteria: CriteriaRecorder, health_http: httpx.Client, services: ServiceMap
) -> None:
    checks = []
    for name, (url, spec) in services.items():
        if spec.readiness is None:
            continue  # a static service has nothing to be ready for
        probe = probes.probe(health_http, url + spec.readiness)
        checks.append(
            Check(f"{name}.readiness", flag(probe.ok), 1, "==", detail=probe.describe_failure())
        )
        for dependency in spec.dependencies:
            # A readiness that does not report a dependency it needs is as wrong as one
            # that reports it down: "missing" fails too.
            status = probe.dependency_status(dependency)
            checks.append(
                Check(
                    f"{name}.readiness.{dependency}",
                    flag(status == "pass"),
                    1,
                    "==",
                    detail=f"{dependency} check {status or 'missing'}; {probe.describe_failure()}",
                )
            )
    apex_criteria.judge(checks)


def test_health_bodies_follow_health_json(
    apex_criteria: CriteriaRecorder, health_http: httpx.Client, services: ServiceMap
) -> None:
    checks = []
    for name, (url, spec) in services.items():
        problems = [
            problem
            for path in spec.paths
            if (problem := probes.probe(health_http, url + path).describe_conformance())
        ]
        checks.append(
            Check(
                f"{name}.health_json_violations",
                len(problems),
                0,
                "<=",
                detail="; ".join(problems),
            )
        )
    apex_criteria.judge(checks)


def test_health_endpoints_answer_within_the_threshold(
    apex_criteria: CriteriaRecorder,
    apex_settings: ApexSettings,
    health_http: httpx.Client,
    services: ServiceMap,
) -> None:
    thresholds = apex_settings.thresholds
    rule, limit = thresholds.spec(HEALTH_RESPONSE), thresholds.number(HEALTH_RESPONSE)
    assert rule.op is not None, f"{HEALTH_RESPONSE} is a setting, not a criterion"
    # Twice the limit: a probe still unanswered by then has certainly missed it.
    budget_s = max(2 * limit, MIN_ANSWER_BUDGET_S)
    checks = []
    for name, (url, spec) in services.items():
        times = probes.ResponseTime(
            tuple(
                p
                for path in spec.paths
                for p in probes.probe_repeatedly(
                    health_http, url + path, PROBES_PER_ENDPOINT, budget_s
                )
            )
        )
        checks.append(
            Check(
                f"{name}.{rule.criterion}",
                times.seconds,
                limit,
                rule.op,
                unit=rule.unit,
                detail=times.describe(),
                samples=len(times.probes),
            )
        )
    apex_criteria.judge(checks)


def test_compose_reports_every_container_healthy(
    apex_criteria: CriteriaRecorder, apex_containers: list[ContainerInfo]
) -> None:
    apex_criteria.judge(
        [
            Check(
                f"{c.service}.compose_health",
                flag(c.state == "running" and c.health == "healthy"),
                1,
                "==",
                detail=f"state {c.state}, health {c.health or 'no health check'}",
            )
            for c in apex_containers
        ],
    )


# --- configuration in effect --------------------------------------------------------------


def test_configuration_in_effect_is_the_promised_one(
    apex_criteria: CriteriaRecorder,
    health_http: httpx.Client,
    apex_endpoints: dict[str, str],
    apex_expected_config: PromisedConfig,
) -> None:
    # From the running process (live pool and WebSocket manager), not from .env.staging:
    # the original platform declared settings that nothing read.
    response = health_http.get(endpoint(apex_endpoints, "backend") + "/health/config")
    assert response.status_code == 200, (
        f"GET /health/config answered {response.status_code}: the backend does not say "
        "which settings it runs with"
    )
    in_effect = backend_config_in_effect(response.json())
    apex_criteria.judge(
        [
            Check(f"config.{c.name}", *c.as_numbers(), "==", unit=c.unit, detail=c.describe())
            for c in compare(apex_expected_config.backend_settings(), in_effect)
        ],
    )


async def test_redis_runs_with_its_memory_limit_and_policy(
    apex_criteria: CriteriaRecorder, apex_redis_url: str, apex_expected_config: PromisedConfig
) -> None:
    memory = await datastore.redis_memory(apex_redis_url)
    promised = apex_expected_config
    apex_criteria.judge(
        [
            Check(
                "redis.maxmemory",
                memory.maxmemory_bytes / 2**20,
                promised.redis_maxmemory_bytes / 2**20,
                "==",
                unit="MiB",
                detail="0 means unlimited: Redis would grow until the container is killed",
            ),
            Check(
                "redis.maxmemory_policy",
                flag(memory.policy == promised.redis_maxmemory_policy),
                1,
                "==",
                detail=f"policy {memory.policy!r}, promised {promised.redis_maxmemory_policy!r}",
            ),
        ],
    )


# --- security posture -----------------------------------------------------------------------


def test_containers_run_as_non_root(
    apex_criteria: CriteriaRecorder, apex_containers: list[ContainerInfo]
) -> None:
    apex_criteria.judge(
        [
            Check(
                f"{c.service}.non_root",
                flag(not posture.runs_as_root(c)),
                1,
                "==",
                detail=f"user {c.user or 'unset (root)'}",
            )
            for c in apex_containers
        ],
    )


def test_containers_have_memory_and_cpu_limits(
    apex_criteria: CriteriaRecorder, apex_containers: list[ContainerInfo]
) -> None:
    checks = []
    for c in apex_containers:
        checks.append(
            Check(
                f"{c.service}.memory_limit",
                c.memory_limit_bytes / 2**20,
                0,
                ">",
                unit="MiB",
                detail="0 means unlimited",
            )
        )
        checks.append(
            Check(
                f"{c.service}.cpu_limit",
                c.nano_cpus / 1e9,
                0,
                ">",
                unit="CPUs",
                detail="0 means unlimited",
            )
        )
    apex_criteria.judge(checks)


def test_ports_are_published_on_loopback_only(
    apex_criteria: CriteriaRecorder, apex_containers: list[ContainerInfo]
) -> None:
    apex_criteria.judge(
        [
            Check(
                f"{c.service}.ports_beyond_loopback",
                len(exposed := posture.exposed_beyond_loopback(c)),
                0,
                "<=",
                detail=", ".join(exposed),
            )
            for c in apex_containers
        ],
    )


def test_every_service_sends_the_security_headers(
    apex_criteria: CriteriaRecorder, health_http: httpx.Client, services: ServiceMap
) -> None:
    checks = []
    for name, (url, spec) in services.items():
        response = health_http.get(url + spec.liveness)
        problems = http_posture.security_header_problems(response.headers)
        checks.append(
            Check(
                f"{name}.security_header_problems",
                len(problems),
                0,
                "<=",
                detail="; ".join(problems),
            )
        )
    apex_criteria.judge(checks)


def test_cors_allows_only_the_configured_origin(
    apex_criteria: CriteriaRecorder,
    health_http: httpx.Client,
    apex_endpoints: dict[str, str],
    apex_expected_config: PromisedConfig,
) -> None:
    allowed = apex_expected_config.cors_allowed_origin
    checks = []
    for name, route in PROTECTED_ROUTES.items():
        if name not in apex_endpoints:
            continue
        url = apex_endpoints[name] + route
        # The control: the configured origin is let in, on a route that exists. Refusing
        # everything (or answering 404) would otherwise pass the foreign-origin check.
        own = [
            controls.Outcome(a.allowed and a.status_code != 404, a.describe())
            for a in http_posture.cors_answers(health_http, url, allowed)
        ]
        control_ok = all(o.ok for o in own)
        control_seen = "; ".join(o.seen for o in own)
        foreign = [
            controls.Controlled(
                route=f"{name} {route}",
                control_ok=control_ok,
                control_seen=control_seen,
                refused=not answer.allowed,
                let_in=answer.allowed,
                seen=answer.describe(),
            )
            for origin in http_posture.foreign_origins(allowed)
            for answer in http_posture.cors_answers(health_http, url, origin)
        ]
        checks += [
            controls.every(f"{name}.cors.configured_origin_allowed", own, nothing=""),
            controls.refusals(f"{name}.cors.foreign_origins_refused", foreign, nothing=""),
        ]
    apex_criteria.judge(checks)


# --- tokens a hardened service must refuse --------------------------------------------------
# Criteria are named `jwt_<kind>`, not `jwt.<kind>`: the report redactor reads `jwt.` followed
# by text as a WebSocket token subprotocol and would mask the name.


@pytest.fixture
async def genuine_token(apex_users: UserFactory) -> str:
    """A real access token of a fresh user (through the adapter, however the app logs in)."""
    users = await apex_users(1)
    token = getattr(users[0], "token", None)
    if not isinstance(token, str):
        pytest.skip("the adapter's user sessions expose no bearer token to forge from")
    return token


def _rest_routes(endpoints: Mapping[str, str]) -> dict[str, str]:
    """Route name -> URL of each protected REST route the target exposes."""
    return {
        f"{name} {route}": endpoints[name] + route
        for name, route in PROTECTED_ROUTES.items()
        if name in endpoints
    }


async def _rest_answers(routes: Mapping[str, str], token: str) -> dict[str, auth_probe.RestAnswer]:
    async with httpx.AsyncClient(timeout=httpx.Timeout(10.0)) as client:
        return {
            name: await auth_probe.rest_answer(client, url, token) for name, url in routes.items()
        }


async def _ws_answers(adapter: AppAdapter, token: str) -> dict[str, auth_probe.WsAnswer]:
    """Transport -> how the app's socket answered `token` ({} when the adapter cannot say)."""
    if not isinstance(adapter, RawTokenSocket):
        return {}
    return {
        transport: await auth_probe.ws_answer(adapter, token, transport)
        for transport in adapter.socket_token_transports
    }


NO_REST_ROUTE: Final = "the target exposes none of the protected routes to probe"
NO_SOCKET: Final = "the adapter cannot open the app's WebSocket with a raw token (RawTokenSocket)"


def _outcomes(
    answers: Mapping[str, auth_probe.RestAnswer | auth_probe.WsAnswer],
) -> list[controls.Outcome]:
    return [controls.Outcome(a.accepted, a.describe()) for a in answers.values()]


async def test_genuine_token_is_accepted_on_rest_and_websocket(
    apex_criteria: CriteriaRecorder,
    apex_endpoints: dict[str, str],
    apex_adapter: AppAdapter,
    genuine_token: str,
) -> None:
    # The control for the rejections below: they only count if the real token gets in.
    rest = await _rest_answers(_rest_routes(apex_endpoints), genuine_token)
    ws = await _ws_answers(apex_adapter, genuine_token)
    apex_criteria.judge(
        [
            controls.every("jwt_genuine.rest_accepted", _outcomes(rest), nothing=NO_REST_ROUTE),
            controls.every("jwt_genuine.ws_accepted", _outcomes(ws), nothing=NO_SOCKET),
        ],
    )


@pytest.mark.parametrize("kind", tokens.KINDS)
async def test_bad_token_is_rejected_on_rest_and_websocket(
    kind: str,
    apex_criteria: CriteriaRecorder,
    apex_target: Target,
    apex_endpoints: dict[str, str],
    apex_adapter: AppAdapter,
    apex_token_key_source: tokens.SigningKeySource,
    genuine_token: str,
) -> None:
    source = apex_token_key_source
    secret = source.find(apex_target.environment(source.service))
    made = tokens.bad_tokens(genuine_token, secret, f"{source.variable} of {source.service}")
    if kind not in made.tokens:
        pytest.skip(f"no {kind} token on target {apex_target.name}: {made.unavailable[kind]}")
    routes = _rest_routes(apex_endpoints)
    # Each bad token next to the genuine one on the same route, in the same test: a route
    # that refuses the genuine token too (404, 403 of an unknown socket path) proves
    # nothing, and its criterion is inconclusive instead of passing.
    rest_control = await _rest_answers(routes, genuine_token)
    rest = await _rest_answers(routes, made.tokens[kind])
    ws_control = await _ws_answers(apex_adapter, genuine_token)
    ws = await _ws_answers(apex_adapter, made.tokens[kind])
    apex_criteria.judge(
        [
            controls.refusals(
                f"jwt_{kind}.rest_rejected",
                [auth_probe.controlled(rest_control[r], rest[r], r) for r in routes],
                nothing=NO_REST_ROUTE,
            ),
            controls.refusals(
                f"jwt_{kind}.ws_rejected",
                [auth_probe.controlled(ws_control[t], ws[t], "websocket") for t in ws],
                nothing=NO_SOCKET,
            ),
        ],
    )


# --- data layer and metrics -----------------------------------------------------------------


async def test_init_schema_is_present(
    apex_criteria: CriteriaRecorder, apex_postgres_dsn: str, apex_expected_schema: frozenset[str]
) -> None:
    missing = sorted(apex_expected_schema - await datastore.schema_objects(apex_postgres_dsn))
    apex_criteria.judge(
        [Check("schema.missing_objects", len(missing), 0, "<=", detail=f"missing {missing}")],
    )


async def test_isolation_violations_query_returns_no_rows(
    apex_criteria: CriteriaRecorder, apex_postgres_dsn: str
) -> None:
    rows = await datastore.isolation_violations(apex_postgres_dsn)
    apex_criteria.judge(
        [
            Check(
                "isolation_violations.rows",
                len(rows),
                0,
                "<=",
                detail=f"agent instances seen under several users: {rows[:3]}",
            )
        ],
    )


def test_metrics_expose_the_series_the_other_suites_read(
    apex_criteria: CriteriaRecorder,
    health_http: httpx.Client,
    apex_endpoints: dict[str, str],
    apex_required_series: tuple[str, ...],
) -> None:
    response = health_http.get(endpoint(apex_endpoints, "backend") + "/metrics")
    assert response.status_code == 200, f"GET /metrics answered {response.status_code}"
    try:
        missing = metrics.missing_series(response.text, apex_required_series)
    except metrics.MetricsUnreadable as exc:
        missing, why = list(apex_required_series), f"GET /metrics: {exc}"
    else:
        why = f"missing {missing}"
    apex_criteria.judge([Check("metrics.missing_series", len(missing), 0, "<=", detail=why)])


# --- the frontend in a real browser ---------------------------------------------------------


def test_chat_page_streams_the_agent_events_in_a_real_browser(
    apex_criteria: CriteriaRecorder, apex_endpoints: dict[str, str]
) -> None:
    frontend = endpoint(apex_endpoints, "frontend")
    tag = uuid.uuid4().hex[:8]
    try:
        trip = chat_round_trip(
            frontend,
            f"browser-{tag}@apex.test",
            f"health check from a real browser {tag}",
            timeout_s=BROWSER_TIMEOUT_S,
        )
    except BrowserUnavailable as exc:
        # Not a skip: `make setup` installs Chromium, so its absence is a broken host.
        pytest.fail(str(exc), pytrace=False)
    if trip.screenshot:
        allure.attach(
            trip.screenshot,
            name="chat page after the run",
            attachment_type=allure.attachment_type.PNG,
        )
    agent_events = [t for t in trip.event_types if t in (*AGENT_EVENT_TYPES, "agent_error")]
    apex_criteria.judge(
        [
            Check("browser.page_loaded", flag(trip.page_loaded), 1, "==", detail=trip.describe()),
            Check("browser.logged_in", flag(trip.logged_in), 1, "==", detail=trip.describe()),
            Check(
                "browser.events_seen",
                len(agent_events),
                len(AGENT_EVENT_TYPES),
                ">=",
                detail=trip.describe(),
            ),
            Check(
                "browser.agent_event_types",
                trip.agent_events_seen,
                len(AGENT_EVENT_TYPES),
                "==",
                detail=trip.describe(),
            ),
        ],
    )
