"""Health suite: every service alive, ready and configured as promised.

The staging report's original health script only sent `GET /health` to three ports. Each
test here is one line of what a release must prove instead: probe the running deployment,
turn what was seen into criteria (`apex_criteria`), fail naming every criterion that did not
hold. What to expect comes from the app description (`apex_app`), never from the files under
test. What the app does not have (no readiness route, no WebSocket, no metrics) is skipped
with the reason; checks that need container access skip on external targets.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Mapping
from typing import Final

import allure
import httpx
import pytest
import pytest_asyncio

from pytest_apex.adapters.base import AppAdapter, RawTokenSocket
from pytest_apex.app.model import AppDescription, Service, Topology
from pytest_apex.fixtures import UserFactory
from pytest_apex.health import (
    auth_probe,
    controls,
    datastore,
    http_posture,
    metrics,
    posture,
    probes,
    replicas,
    tokens,
)
from pytest_apex.health.browser import AGENT_EVENT_TYPES, BrowserUnavailable, chat_round_trip
from pytest_apex.health.config import compare_in_effect, compare_settings
from pytest_apex.recording import Check, CriteriaRecorder
from pytest_apex.reporting import allure as allure_report
from pytest_apex.reporting.health_chart import response_time_chart
from pytest_apex.settings import ApexSettings
from pytest_apex.targets.base import ContainerInfo, Target

pytestmark = pytest.mark.health
# Async tests and fixtures share the session's event loop whatever the project's asyncio
# settings: the suite brings what it needs.
in_session_loop = pytest.mark.asyncio(loop_scope="session")

# One probe's time is noise; the slowest of a few is what a health check with a timeout meets.
PROBES_PER_ENDPOINT: Final = 5
HEALTH_RESPONSE: Final = "health_response_s_max"
MIN_ANSWER_BUDGET_S: Final = 1.0
BROWSER_TIMEOUT_S: Final = 30.0

ServiceMap = dict[str, tuple[str, Service]]


# --- how a test turns what it saw into criteria -----------------------------------------------


def flag(ok: bool) -> int:
    return 1 if ok else 0


def endpoint(endpoints: Mapping[str, str], service: str) -> str:
    if service not in endpoints:
        pytest.skip(f"the target has no {service} endpoint (got {', '.join(sorted(endpoints))})")
    return endpoints[service]


def protected_routes(app: AppDescription, endpoints: Mapping[str, str]) -> dict[str, str]:
    """Route name -> URL of each protected route of a service the target exposes."""
    return {
        f"{name} {route}": endpoints[name] + route
        for name, service in app.services.items()
        if name in endpoints
        for route in service.protected_routes
    }


def has_websocket(app: AppDescription) -> bool:
    return any(s.websocket for s in app.services.values())


@pytest.fixture(scope="module")
def services(
    apex_health_layout: Mapping[str, Service], apex_endpoints: dict[str, str]
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
        assert spec.liveness is not None  # the layout holds services with a liveness route
        probe = probes.probe(health_http, url + spec.liveness.path)
        checks.append(
            Check(
                f"{name}.liveness",
                flag(probe.healthy(spec.liveness)),
                1,
                "==",
                detail=probe.describe_failure(),
            )
        )
    apex_criteria.judge(checks)


def test_every_service_is_ready_and_reports_each_dependency(
    apex_criteria: CriteriaRecorder, health_http: httpx.Client, services: ServiceMap
) -> None:
    checks = []
    for name, (url, spec) in services.items():
        if spec.readiness is None:
            continue  # a static service has nothing to be ready for
        probe = probes.probe(health_http, url + spec.readiness.path)
        checks.append(
            Check(
                f"{name}.readiness",
                flag(probe.healthy(spec.readiness)),
                1,
                "==",
                detail=probe.describe_failure(),
            )
        )
        for dependency in spec.readiness.dependencies:
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
    if not checks:
        pytest.skip("no described service has a readiness route")
    apex_criteria.judge(checks)


def test_health_bodies_follow_health_json(
    apex_criteria: CriteriaRecorder, health_http: httpx.Client, services: ServiceMap
) -> None:
    checks = []
    for name, (url, spec) in services.items():
        routes = [r for r in (spec.liveness, spec.readiness) if r and r.format == "health+json"]
        if not routes:
            continue  # the description promises another format; liveness judges it
        problems = [
            problem
            for route in routes
            if (problem := probes.probe(health_http, url + route.path).describe_conformance())
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
    if not checks:
        pytest.skip("no described health route promises application/health+json")
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
    probed: dict[str, tuple[probes.HealthProbe, ...]] = {}
    for name, (url, spec) in services.items():
        times = probes.ResponseTime(
            tuple(
                p
                for path in spec.health_paths
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
        probed[name] = times.probes
    if allure_report.listening():
        allure.attach(
            response_time_chart(probed, limit, rule.op),
            name="health response times",
            attachment_type=allure.attachment_type.PNG,
        )
    apex_criteria.judge(checks)


def test_every_replica_answers_through_the_services_endpoint(
    apex_criteria: CriteriaRecorder,
    apex_topology: Topology | None,
    apex_app: AppDescription,
    apex_endpoints: dict[str, str],
) -> None:
    # Replicas that never joined, or a balancer pinning everyone to one of them, pass every
    # other health check: only the instances answering through the users' endpoint prove
    # the topology. Nothing to prove without a selected topology that promises replicas.
    promised = apex_topology.replicated if apex_topology is not None else {}
    if not promised:
        pytest.skip("no selected topology promises replicas (--apex-topology NAME)")
    checks = []
    for name, expected in promised.items():
        route = apex_app.services[name].liveness
        if name not in apex_endpoints:
            judged = replicas.not_probed(name, expected, f"the target has no {name} endpoint")
        elif route is None:
            judged = replicas.not_probed(name, expected, f"{name} has no liveness route to ask")
        elif not route.instance_field:
            judged = replicas.no_instance_field(name, expected)
        else:
            seen = replicas.count_instances(
                apex_endpoints[name] + route.path,
                route.instance_field,
                replicas.PROBES_PER_REPLICA * expected,
            )
            judged = replicas.judge(seen, expected)
        checks.append(
            Check(
                f"{name}.replicas_reached",
                judged.observed,
                judged.expected,
                ">=",
                unit="instances",
                detail=judged.detail,
                samples=judged.samples,
                inconclusive=judged.inconclusive,
            )
        )
    apex_criteria.judge(checks)


def container_names(containers: list[ContainerInfo]) -> list[tuple[str, ContainerInfo]]:
    """Each container with the name its criteria carry: its service, or, for a service
    running several replicas, ``service-N`` (compose's container number), so that two
    replicas never record one criterion name twice."""
    per_service = Counter(c.service for c in containers)
    seen: Counter[str] = Counter()
    named = []
    for c in containers:
        seen[c.service] += 1
        if per_service[c.service] == 1:
            named.append((c.service, c))
        else:  # compose's own number; the listing's order only if compose gave none
            named.append((f"{c.service}-{c.number or seen[c.service]}", c))
    return named


def container_done(container: ContainerInfo, app: AppDescription) -> bool:
    """Running and healthy, or, for a one-shot job of the description, exited 0 (done)."""
    service = app.services.get(container.service)
    if service is not None and service.role == "job":
        return container.state == "exited" and container.exit_code == 0
    return container.state == "running" and container.health == "healthy"


def test_compose_reports_every_container_healthy(
    apex_criteria: CriteriaRecorder, apex_containers: list[ContainerInfo], apex_app: AppDescription
) -> None:
    apex_criteria.judge(
        [
            Check(
                f"{name}.compose_health",
                flag(container_done(c, apex_app)),
                1,
                "==",
                detail=f"state {c.state} (exit {c.exit_code}), "
                f"health {c.health or 'no health check'}",
            )
            for name, c in container_names(apex_containers)
        ],
    )


# --- configuration in effect --------------------------------------------------------------


def test_configuration_in_effect_is_the_promised_one(
    apex_criteria: CriteriaRecorder,
    health_http: httpx.Client,
    apex_endpoints: dict[str, str],
    apex_app: AppDescription,
) -> None:
    # From the running process (live pool and WebSocket manager), not from the env file:
    # the original platform declared settings that nothing read.
    described = {n: s for n, s in apex_app.services.items() if s.config and s.config.settings}
    if not described:
        pytest.skip("no described service reports its configuration in effect (config)")
    checks = []
    for name, service in described.items():
        assert service.config is not None
        url = endpoint(apex_endpoints, name) + service.config.path
        response = health_http.get(url)
        body = response.json() if response.status_code == 200 else {}
        why = "" if response.status_code == 200 else f"GET {url} answered {response.status_code}"
        checks += [
            Check(
                f"config.{c.name}",
                *c.as_numbers(),
                "==",
                unit=c.unit,
                detail=why or c.describe(),
            )
            for c in compare_in_effect(service.config.settings, body)
        ]
    apex_criteria.judge(checks)


@in_session_loop
async def test_data_stores_run_with_their_promised_settings(
    apex_criteria: CriteriaRecorder, apex_endpoints: dict[str, str], apex_app: AppDescription
) -> None:
    stores = {
        n: s for n, s in apex_app.services.items() if s.settings and s.scheme.startswith("redis")
    }
    if not stores:
        pytest.skip("no described data store promises settings of its own")
    checks = []
    for name, store in stores.items():
        url = endpoint(apex_endpoints, name)
        reported = await datastore.redis_settings(url, store.settings)
        checks += [
            Check(f"{name}.{c.name}", *c.as_numbers(), "==", unit=c.unit, detail=c.describe())
            for c in compare_settings(store.settings, reported)
        ]
    apex_criteria.judge(checks)


# --- security posture -----------------------------------------------------------------------


def test_containers_run_as_non_root(
    apex_criteria: CriteriaRecorder, apex_containers: list[ContainerInfo]
) -> None:
    apex_criteria.judge(
        [
            Check(
                f"{name}.non_root",
                flag(not posture.runs_as_root(c)),
                1,
                "==",
                detail=f"user {c.user or 'unset (root)'}",
            )
            for name, c in container_names(apex_containers)
        ],
    )


def test_containers_have_memory_and_cpu_limits(
    apex_criteria: CriteriaRecorder, apex_containers: list[ContainerInfo]
) -> None:
    checks = []
    for name, c in container_names(apex_containers):
        checks.append(
            Check(
                f"{name}.memory_limit",
                c.memory_limit_bytes / 2**20,
                0,
                ">",
                unit="MiB",
                detail="0 means unlimited",
            )
        )
        checks.append(
            Check(
                f"{name}.cpu_limit",
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
                f"{name}.ports_beyond_loopback",
                len(exposed := posture.exposed_beyond_loopback(c)),
                0,
                "<=",
                detail=", ".join(exposed),
            )
            for name, c in container_names(apex_containers)
        ],
    )


def test_every_service_sends_the_security_headers(
    apex_criteria: CriteriaRecorder, health_http: httpx.Client, services: ServiceMap
) -> None:
    checks = []
    for name, (url, spec) in services.items():
        if not spec.security_headers or spec.liveness is None:
            continue
        response = health_http.get(url + spec.liveness.path)
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
    apex_app: AppDescription,
) -> None:
    allowed = apex_app.cors_origin
    if not allowed:
        pytest.skip("the app description names no allowed CORS origin (cors_origin)")
    checks = []
    for route, url in protected_routes(apex_app, apex_endpoints).items():
        name = route.split(" ", 1)[0]
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
                route=route,
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
    if not checks:
        pytest.skip("the target exposes none of the described protected routes")
    apex_criteria.judge(checks)


# --- tokens a hardened service must refuse --------------------------------------------------
# Criteria are named `jwt_<kind>`, not `jwt.<kind>`: the report redactor reads `jwt.` followed
# by text as a WebSocket token subprotocol and would mask the name.


@pytest_asyncio.fixture(loop_scope="session")
async def genuine_token(apex_users: UserFactory) -> str:
    """A real access token of a fresh user (through the adapter, however the app logs in)."""
    users = await apex_users(1)
    token = getattr(users[0], "token", None)
    if not isinstance(token, str):
        pytest.skip("the adapter's user sessions expose no bearer token to forge from")
    return token


async def _rest_answers(routes: Mapping[str, str], token: str) -> dict[str, auth_probe.RestAnswer]:
    async with httpx.AsyncClient(timeout=httpx.Timeout(10.0)) as client:
        return {
            name: await auth_probe.rest_answer(client, url, token) for name, url in routes.items()
        }


async def _ws_answers(
    adapter: AppAdapter, token: str, app: AppDescription
) -> dict[str, auth_probe.WsAnswer]:
    """Transport -> how the app's socket answered `token` ({} when the adapter cannot say)."""
    if not has_websocket(app) or not isinstance(adapter, RawTokenSocket):
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


def _socket_check(app: AppDescription, check: Check) -> list[Check]:
    # An app without a WebSocket has no socket to refuse tokens on: no criterion, rather
    # than an inconclusive one that no fix to the app could ever settle.
    return [check] if has_websocket(app) else []


@in_session_loop
async def test_genuine_token_is_accepted_on_rest_and_websocket(
    apex_criteria: CriteriaRecorder,
    apex_endpoints: dict[str, str],
    apex_adapter: AppAdapter,
    apex_app: AppDescription,
    genuine_token: str,
) -> None:
    # The control for the rejections below: they only count if the real token gets in.
    rest = await _rest_answers(protected_routes(apex_app, apex_endpoints), genuine_token)
    ws = await _ws_answers(apex_adapter, genuine_token, apex_app)
    apex_criteria.judge(
        [
            controls.every("jwt_genuine.rest_accepted", _outcomes(rest), nothing=NO_REST_ROUTE),
            *_socket_check(
                apex_app,
                controls.every("jwt_genuine.ws_accepted", _outcomes(ws), nothing=NO_SOCKET),
            ),
        ],
    )


@in_session_loop
@pytest.mark.parametrize("kind", tokens.KINDS)
async def test_bad_token_is_rejected_on_rest_and_websocket(
    kind: str,
    apex_criteria: CriteriaRecorder,
    apex_target: Target,
    apex_endpoints: dict[str, str],
    apex_adapter: AppAdapter,
    apex_app: AppDescription,
    apex_token_key_source: tokens.SigningKeySource | None,
    genuine_token: str,
) -> None:
    source = apex_token_key_source
    if source is None:
        secret, where = None, "the app description names no signing key (auth.signing_key)"
    else:
        secret = source.find(apex_target.environment(source.service))
        where = f"{source.variable} of {source.service}"
    made = tokens.bad_tokens(genuine_token, secret, where)
    if kind not in made.tokens:
        pytest.skip(f"no {kind} token on target {apex_target.name}: {made.unavailable[kind]}")
    routes = protected_routes(apex_app, apex_endpoints)
    # Each bad token next to the genuine one on the same route, in the same test: a route
    # that refuses the genuine token too (404, 403 of an unknown socket path) proves
    # nothing, and its criterion is inconclusive instead of passing.
    rest_control = await _rest_answers(routes, genuine_token)
    rest = await _rest_answers(routes, made.tokens[kind])
    ws_control = await _ws_answers(apex_adapter, genuine_token, apex_app)
    ws = await _ws_answers(apex_adapter, made.tokens[kind], apex_app)
    apex_criteria.judge(
        [
            controls.refusals(
                f"jwt_{kind}.rest_rejected",
                [auth_probe.controlled(rest_control[r], rest[r], r) for r in routes],
                nothing=NO_REST_ROUTE,
            ),
            *_socket_check(
                apex_app,
                controls.refusals(
                    f"jwt_{kind}.ws_rejected",
                    [auth_probe.controlled(ws_control[t], ws[t], "websocket") for t in ws],
                    nothing=NO_SOCKET,
                ),
            ),
        ],
    )


# --- data layer and metrics -----------------------------------------------------------------


def described_database(app: AppDescription) -> tuple[str, frozenset[str], str]:
    """(service, schema objects, violations query) of the described database, or skip."""
    if app.database is None:
        pytest.skip("the app description has no [database] section")
    return app.database.service, app.database.schema_objects, app.database.violations_query


@in_session_loop
async def test_init_schema_is_present(
    apex_criteria: CriteriaRecorder, apex_app: AppDescription, request: pytest.FixtureRequest
) -> None:
    _service, expected, _query = described_database(apex_app)
    if not expected:
        pytest.skip("the app description lists no schema objects (database.schema_objects)")
    dsn = request.getfixturevalue("apex_postgres_dsn")
    missing = sorted(expected - await datastore.schema_objects(dsn))
    apex_criteria.judge(
        [Check("schema.missing_objects", len(missing), 0, "<=", detail=f"missing {missing}")],
    )


@in_session_loop
async def test_isolation_violations_query_returns_no_rows(
    apex_criteria: CriteriaRecorder, apex_app: AppDescription, request: pytest.FixtureRequest
) -> None:
    _service, _expected, query = described_database(apex_app)
    if not query:
        pytest.skip("the app description names no isolation-violation query")
    rows = await datastore.isolation_violations(request.getfixturevalue("apex_postgres_dsn"), query)
    apex_criteria.judge(
        [
            Check(
                "isolation_violations.rows",
                len(rows),
                0,
                "<=",
                detail=f"violations the app's own query reports: {rows[:3]}",
            )
        ],
    )


def test_metrics_expose_the_series_the_other_suites_read(
    apex_criteria: CriteriaRecorder,
    health_http: httpx.Client,
    apex_endpoints: dict[str, str],
    apex_app: AppDescription,
) -> None:
    described = {
        n: s.metrics for n, s in apex_app.services.items() if s.metrics and s.metrics.series
    }
    if not described:
        pytest.skip("no described service exposes Prometheus metrics (metrics.series)")
    checks = []
    for name, route in described.items():
        url = endpoint(apex_endpoints, name) + route.path
        response = health_http.get(url)
        try:
            if response.status_code != 200:
                raise metrics.MetricsUnreadable(f"answered {response.status_code}")
            missing = metrics.missing_series(response.text, route.series)
        except metrics.MetricsUnreadable as exc:
            missing, why = list(route.series), f"GET {url}: {exc}"
        else:
            why = f"missing {missing}"
        checks.append(Check(f"{name}.metrics.missing_series", len(missing), 0, "<=", detail=why))
    apex_criteria.judge(checks)


# --- the frontend in a real browser ---------------------------------------------------------


def test_chat_page_streams_the_agent_events_in_a_real_browser(
    apex_criteria: CriteriaRecorder, apex_endpoints: dict[str, str], apex_app: AppDescription
) -> None:
    # The chat page of an agent app: the browser logs in, sends a message and must see the
    # agent's events stream in.
    frontends = apex_app.with_role("frontend")
    if not (apex_app.capabilities.agent_runs and frontends):
        pytest.skip("the app description has no frontend streaming agent runs")
    frontend = endpoint(apex_endpoints, frontends[0].name)
    tag = uuid.uuid4().hex[:8]
    try:
        trip = chat_round_trip(
            frontend,
            f"browser-{tag}@{apex_app.users.domain}",
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
