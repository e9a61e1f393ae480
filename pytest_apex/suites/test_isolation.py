"""Isolation suite: 150+ concurrent users who never see each other's data.

Two scenarios, each for what the app description says the app can do: agent runs streamed
over a WebSocket (`capabilities.agent_runs`), and the REST resources users own (every
described resource and sub-resource). An app gets every scenario it has and is skipped,
with the reason, for what it has not.

The staging report claimed "100+ concurrent users, isolation validated under load"; its load
test sent unauthenticated GETs and had no cross-user check at all (reference §1). Here the
users are real: each logs in, marks everything it sends with its own canary, and runs the
agent at the same moment as all the others while probing their threads. Each criterion of
the report is recorded (`apex_criteria`) and the test fails naming every one that did not
hold, with a few examples of which user saw whose data.

"0 breaches" counts only as far as the probes were answered: every probe kind has a positive
control (answered >= sent), and its breach criterion is inconclusive while any probe went
unanswered (a 5xx, an exception, the deadline), so a backend that answers nothing can never
pass. A database check that cannot run is an inconclusive criterion, never a silent skip.
"""

from __future__ import annotations

import json
import math
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Final

import allure
import httpx
import pytest

from pytest_apex.app.model import AppDescription
from pytest_apex.health.metrics import sample_sums
from pytest_apex.isolation.agent_scenario import (
    AgentScenarioResult,
    AgentScenarioSpec,
)
from pytest_apex.isolation.cleanup import ReadGauges
from pytest_apex.isolation.database import DatabaseUnreachable, violations_of_users
from pytest_apex.isolation.inbox import timeline
from pytest_apex.isolation.rest_scenario import (
    RestScenarioSpec,
    plans_for,
)
from pytest_apex.jsonpath import dig
from pytest_apex.recording import Check, CriteriaRecorder
from pytest_apex.reporting.allure import listening as allure_enabled
from pytest_apex.reporting.contamination import render_contamination_matrix, stream_timeline
from pytest_apex.settings import ApexSettings, Thresholds
from pytest_apex.suites.isolation_checks import agent_checks, rest_checks
from pytest_apex.suites.isolation_fixtures import AgentIsolation, RestIsolation

pytestmark = pytest.mark.isolation


# The suite's async tests share the session's event loop whatever the project's asyncio
# settings are: the suite brings what it needs.
in_session_loop = pytest.mark.asyncio(loop_scope="session")

PROBES_PER_USER: Final = 3  # other users' items each user tries to open by id (REST)
PROBES_PER_ROUND: Final = 2  # other users each user probes per agent round
# A run that has not ended after this many times the containment threshold is lost.
RUN_TIMEOUT_FACTOR: Final = 3.0
DEADLINE_S: Final = 300.0
DRAIN_S: Final = 3.0  # the quiet window at the end: what arrives now arrives outside every run
EXAMPLES: Final = 3
GAUGE_TIMEOUT_S: Final = 10.0


def postgres_dsn(request: pytest.FixtureRequest) -> tuple[str | None, str]:
    """The stack's DSN, or None and the reason the database part cannot run."""
    try:
        return str(request.getfixturevalue("apex_postgres_dsn")), ""
    except pytest.skip.Exception as exc:
        return None, str(exc)


async def live_limit(app: AppDescription, endpoints: Mapping[str, str], setting: str) -> int:
    """One of the app's limits (`limits` in its description): the running service's value
    from its config route, else the promised one; 0 when the description names none."""
    found = app.setting(setting) if setting else None
    if found is None:
        return 0
    service, promised = found
    value: object = promised.expect
    url = endpoints.get(service.name)
    if url and service.config is not None:
        try:
            async with httpx.AsyncClient(timeout=GAUGE_TIMEOUT_S) as client:
                answer = await client.get(url + service.config.path)
            if answer.is_success:
                found_value = dig(answer.json(), promised.at)
                value = value if found_value is None else found_value
        except (httpx.HTTPError, ValueError):
            pass  # the promised value still says where the limit should be
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return 0
    try:
        return int(float(value))
    except ValueError:
        return 0


def gauges_reader(app: AppDescription, endpoints: Mapping[str, str]) -> ReadGauges | None:
    """Reads the described gauges of live resources (`metrics.at_rest`), summed over every
    service that has them; None when the app describes none."""
    routes = [
        (endpoints[s.name] + s.metrics.path, s.metrics.at_rest)
        for s in app.services.values()
        if s.metrics is not None and s.metrics.at_rest and s.name in endpoints
    ]
    if not routes:
        return None

    async def read() -> dict[str, float]:
        totals: dict[str, float] = {}
        async with httpx.AsyncClient(timeout=GAUGE_TIMEOUT_S) as client:
            for url, names in routes:
                answer = await client.get(url)
                answer.raise_for_status()
                for name, value in sample_sums(answer.text, names).items():
                    totals[name] = totals.get(name, 0.0) + value
                missing = set(names) - set(totals)
                if missing:
                    raise ValueError(f"{url} has no series {', '.join(sorted(missing))}")
        return totals

    return read


def no_gauges(app: AppDescription, endpoints: Mapping[str, str]) -> str:
    described = [s.name for s in app.services.values() if s.metrics and s.metrics.at_rest]
    if not described:
        return f"{app.name} describes none (metrics.at_rest)"
    return f"no endpoint for {', '.join(described)}, whose metrics hold them"


def attach_contamination(result: AgentScenarioResult, tmp_path: Path) -> None:
    """The user-by-user contamination matrix and the timeline of a breached stream (Allure)."""
    if not allure_enabled():
        return
    labels = [result.labels.get(i, str(i)) for i in sorted(result.labels)]
    index_of = {u: n for n, u in enumerate(sorted(result.labels))}
    counts = {
        (index_of[v], index_of[o]): c
        for (v, o), c in result.scan.matrix().items()
        if v in index_of and o in index_of
    }
    matrix = render_contamination_matrix(
        labels, counts, tmp_path / "contamination.png", title="who received whose data"
    )
    allure.attach.file(
        str(matrix), name="contamination matrix", attachment_type=allure.attachment_type.PNG
    )
    if result.scan.leaks:
        viewer = result.scan.leaks[0].viewer
        leaks = [leak for leak in result.scan.leaks if leak.viewer == viewer]
        rows = timeline(result.inbox.of(viewer), leaks)
        picture = stream_timeline(rows, tmp_path / "timeline.png")
        allure.attach.file(
            str(picture),
            name=f"stream of {result.labels.get(viewer, viewer)}",
            attachment_type=allure.attachment_type.PNG,
        )


@in_session_loop
async def test_concurrent_users_never_see_each_others_data(
    apex_criteria: CriteriaRecorder,
    apex_agent_isolation: AgentIsolation,
    apex_settings: ApexSettings,
    apex_app: AppDescription,
    apex_endpoints: dict[str, str],
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    if not apex_app.capabilities.agent_runs:
        pytest.skip(f"{apex_app.name} runs no agent (capabilities.agent_runs); see the REST test")
    thresholds = apex_settings.thresholds
    users = thresholds.integer("concurrent_users_min")
    seed = apex_settings.seed if apex_settings.seed is not None else secrets.randbelow(2**31)
    limits = apex_app.limits
    spec = AgentScenarioSpec(
        users=users,
        rounds=thresholds.integer("isolation_rounds"),
        seed=seed,
        probes_per_round=PROBES_PER_ROUND,
        runs_in_flight_limit=await live_limit(apex_app, apex_endpoints, limits.runs_in_flight),
        sockets_per_user_limit=await live_limit(apex_app, apex_endpoints, limits.sockets_per_user),
        rate_limit_per_minute=await live_limit(
            apex_app, apex_endpoints, limits.messages_per_minute
        ),
        run_timeout_s=RUN_TIMEOUT_FACTOR * thresholds.seconds("isolation_run_p95_s_max"),
        drain_s=DRAIN_S,
        cleanup_timeout_s=thresholds.seconds("isolation_cleanup_s_max") + 5,
        deadline_s=DEADLINE_S,
    )

    gauges = gauges_reader(apex_app, apex_endpoints)
    result = await apex_agent_isolation(spec, gauges)
    if gauges is None:
        result.notes.append(no_gauges(apex_app, apex_endpoints))
    measurements = {
        "seed": seed,
        "users": result.simultaneous,
        "runs": len(result.runs),
        "peak_runs_in_flight": result.peak_runs_in_flight,
        "socket_frames": result.scan.checked["socket"],
        "rest_bodies": result.scan.checked["rest"],
        "leaks": len(result.scan.leaks),
        "probes": len(result.probes),
        "sockets_opened": result.sockets_opened,
        "sockets_refused": result.sockets_refused,
        "wall_s": round(result.wall_seconds, 1),
        "phases_s": result.phases,
    }
    request.node.user_properties.append(("isolation", json.dumps(measurements)))
    print(f"\nisolation (repeat with --apex-seed={seed}): {measurements}")
    attach_contamination(result, tmp_path)
    checks = agent_checks(result, thresholds, users)
    if apex_app.database is not None and apex_app.database.violations_query:
        checks.append(await database_check(result.user_ids, result.labels, thresholds, request))
    apex_criteria.judge(checks)


async def database_check(
    user_ids: Mapping[int, str],
    labels: Mapping[int, str],
    thresholds: Thresholds,
    request: pytest.FixtureRequest,
) -> Check:
    """Agent instances recorded under more than one of this run's users (inconclusive when
    the database cannot be reached: a dependency of the check, not of the app)."""
    breaches = thresholds.spec("isolation_breaches_max")
    assert breaches.op is not None
    limit = thresholds.integer("isolation_breaches_max")
    dsn, no_database = postgres_dsn(request)
    if dsn is None:
        return Check(
            "isolation_violations.rows",
            math.nan,
            limit,
            breaches.op,
            inconclusive=f"the database check did not run: {no_database}",
        )
    try:
        rows = await violations_of_users(dsn, list(user_ids.values()))
    except DatabaseUnreachable as exc:
        return Check(
            "isolation_violations.rows",
            math.nan,
            limit,
            breaches.op,
            inconclusive=f"the database check could not query the database: {exc}",
        )
    label_of = {user_id: labels.get(index, "") for index, user_id in user_ids.items()}
    described = [
        f"agent instance {str(r['agent_instance_id'])[:8]}… served "
        f"{r['user_count']} users ({r['run_count']} runs), e.g. "
        + ", ".join(label_of.get(u) or "a user outside this run" for u in r["user_ids"][:EXAMPLES])
        for r in rows[:EXAMPLES]
    ]
    return Check(
        "isolation_violations.rows", len(rows), limit, breaches.op, detail="; ".join(described)
    )


# --- REST resources users own -----------------------------------------------------------


@in_session_loop
async def test_users_never_see_each_others_resources(
    apex_criteria: CriteriaRecorder,
    apex_rest_isolation: RestIsolation,
    apex_settings: ApexSettings,
    apex_app: AppDescription,
    request: pytest.FixtureRequest,
) -> None:
    if not apex_app.resources:
        pytest.skip(f"the description of {apex_app.name} names no resources users own")
    thresholds = apex_settings.thresholds
    users = thresholds.integer("concurrent_users_min")
    spec = RestScenarioSpec(
        users=users,
        resources=plans_for(apex_app.resources),
        probes_per_user=PROBES_PER_USER,
        seed=apex_settings.seed if apex_settings.seed is not None else secrets.randbelow(2**31),
        deadline_s=DEADLINE_S,
    )
    result = await apex_rest_isolation(spec)
    request.node.user_properties.append(
        (
            "isolation.rest",
            json.dumps(
                {
                    "users": result.users_ready,
                    "scanned": result.answers_scanned,
                    "seconds": round(result.wall_seconds, 1),
                }
            ),
        )
    )
    apex_criteria.judge(rest_checks(result, thresholds, users))
