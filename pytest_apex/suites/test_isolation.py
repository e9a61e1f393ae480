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

import asyncio
import json
import math
from dataclasses import replace
from typing import Any, Final

import pytest

from pytest_apex.app.model import AppDescription
from pytest_apex.fixtures import AgentRunner, UserMaker
from pytest_apex.isolation.accounting import BreachKind, ProbeKind
from pytest_apex.isolation.database import violations_of_users
from pytest_apex.isolation.rest_scenario import (
    RestScenarioResult,
    RestScenarioSpec,
    plans_for,
    run_rest_isolation,
)
from pytest_apex.isolation.scenario import ScenarioResult, ScenarioSpec, run_isolation_scenario
from pytest_apex.recording import Check, CriteriaRecorder
from pytest_apex.settings import ApexSettings, Thresholds

pytestmark = pytest.mark.isolation
# The suite's async tests share the session's event loop whatever the project's asyncio
# settings are: the suite brings what it needs.
in_session_loop = pytest.mark.asyncio(loop_scope="session")

RUNS_PER_USER: Final = 2  # back to back on one socket: the second run meets the first's leftovers
PROBES_PER_USER: Final = 3  # other users' threads each user tries to open by id
RUN_TIMEOUT_S: Final = 20.0  # one run takes about a second at 150 users on the reference stack
DEADLINE_S: Final = 300.0
EXAMPLES: Final = 3


def breach_check(
    result: ScenarioResult, thresholds: Thresholds, name: str, kind: BreachKind
) -> Check:
    spec = thresholds.spec("isolation_breaches_max")
    assert spec.op is not None
    return Check(
        name,
        result.ledger.breach_counts()[kind],
        thresholds.integer("isolation_breaches_max"),
        spec.op,
        detail=result.ledger.summary(kind, EXAMPLES),
    )


def events_check(result: ScenarioResult, thresholds: Thresholds) -> Check:
    """No other user's event on anybody's socket: proven only where events arrived at all."""
    check = breach_check(result, thresholds, "cross_user_events", "events")
    received = result.ledger.total("events_received")
    if check.observed <= check.threshold and received == 0:
        return replace(check, inconclusive="no user received any event of its own runs")
    return replace(check, samples=received)


def probe_checks(
    result: ScenarioResult, thresholds: Thresholds, name: str, control: str, kind: ProbeKind
) -> list[Check]:
    """Breach criterion `name` of a probe kind, and its positive control `control`:
    answered >= sent.

    Breaches seen are breaches however many probes went unanswered; no breach seen counts
    only when every probe was answered (samples = answered, min_samples = sent).
    """
    tally = result.ledger.probes(kind)
    unanswered = result.ledger.probe_summary(kind, EXAMPLES)
    breaches = breach_check(result, thresholds, name, kind)
    if breaches.observed <= breaches.threshold:
        breaches = replace(
            breaches,
            samples=tally.answered,
            min_samples=tally.sent,
            detail="; ".join(filter(None, [breaches.detail, unanswered])),
        )
    answered = Check(
        control,
        tally.answered,
        tally.sent,
        ">=",
        unit="probes",
        detail=unanswered,
        inconclusive="" if tally.sent else "no probe was sent",
    )
    return [answered, breaches]


def incomplete_runs(result: ScenarioResult) -> str:
    """Which users' runs did not complete, in words (a few), with any errors and notes."""
    short = [
        f"{a.label} completed {a.runs_completed}/{RUNS_PER_USER} runs "
        f"({a.events_received}/{a.events_expected} events)"
        for a in result.ledger.accounts.values()
        if a.runs_completed < RUNS_PER_USER
    ]
    parts = []
    if short:
        parts.append(f"{len(short)} users short, e.g. " + "; ".join(short[:EXAMPLES]))
    errors = result.ledger.errors()
    if errors:
        parts.append(f"{len(errors)} errors, e.g. " + "; ".join(errors[:EXAMPLES]))
    parts.extend(result.notes)
    return "; ".join(parts)


def postgres_dsn(request: pytest.FixtureRequest) -> tuple[str | None, str]:
    """The stack's DSN, or None and the reason the database part cannot run."""
    try:
        return str(request.getfixturevalue("apex_postgres_dsn")), ""
    except pytest.skip.Exception as exc:
        return None, str(exc)


@in_session_loop
async def test_concurrent_users_never_see_each_others_data(
    apex_criteria: CriteriaRecorder,
    apex_new_user: UserMaker,
    apex_run_agent: AgentRunner,
    apex_settings: ApexSettings,
    apex_app: AppDescription,
    request: pytest.FixtureRequest,
) -> None:
    if not apex_app.capabilities.agent_runs:
        pytest.skip(f"{apex_app.name} runs no agent (capabilities.agent_runs); see the REST test")
    thresholds = apex_settings.thresholds
    users = thresholds.integer("concurrent_users_min")
    spec = ScenarioSpec(
        users=users,
        runs_per_user=RUNS_PER_USER,
        probes_per_user=PROBES_PER_USER,
        run_timeout_s=RUN_TIMEOUT_S,
        deadline_s=DEADLINE_S,
    )

    async def make_users(count: int) -> list[Any]:
        # Each user on its own: one the app fails to sign up is counted, not fatal to all.
        made = await asyncio.gather(
            *(apex_new_user(i) for i in range(count)), return_exceptions=True
        )
        return list(made)

    result = await run_isolation_scenario(spec, make_users, apex_run_agent)
    measurements = result.measurements()
    request.node.user_properties.append(("isolation", json.dumps(measurements)))
    print(f"\nisolation: {measurements}")

    users_spec = thresholds.spec("concurrent_users_min")
    assert users_spec.op is not None
    checks = [
        # Users served at once: logged in, thread and socket ready, released by one barrier.
        Check(
            users_spec.criterion,
            result.simultaneous,
            users,
            users_spec.op,
            unit=users_spec.unit,
            detail=incomplete_runs(result),
        ),
        events_check(result, thresholds),
        *probe_checks(
            result,
            thresholds,
            "cross_user_thread_lists",
            "thread_list_probes_answered",
            "thread_lists",
        ),
        *probe_checks(
            result,
            thresholds,
            "cross_user_thread_access",
            "thread_access_probes_answered",
            "thread_access",
        ),
        Check(
            "runs_completed",
            result.runs_completed,
            result.simultaneous * RUNS_PER_USER,
            ">=",
            unit="runs",
            detail=incomplete_runs(result),
        ),
    ]
    if apex_app.database is not None and apex_app.database.violations_query:
        checks.append(await database_check(result, thresholds, request))
    apex_criteria.judge(checks)


async def database_check(
    result: ScenarioResult, thresholds: Thresholds, request: pytest.FixtureRequest
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
    rows = await violations_of_users(dsn, result.user_ids)
    labels = {a.user_id: a.label for a in result.ledger.accounts.values()}
    described = [
        f"agent instance {str(r['agent_instance_id'])[:8]}… served "
        f"{r['user_count']} users ({r['run_count']} runs), e.g. "
        + ", ".join(labels.get(u, "a user outside this run") for u in r["user_ids"][:EXAMPLES])
        for r in rows[:EXAMPLES]
    ]
    return Check(
        "isolation_violations.rows", len(rows), limit, breaches.op, detail="; ".join(described)
    )


# --- REST resources users own -----------------------------------------------------------


def rest_checks(result: RestScenarioResult, thresholds: Thresholds, users: int) -> list[Check]:
    """The REST scenario's criteria, each negative one standing on its positive control."""
    users_spec = thresholds.spec("concurrent_users_min")
    breaches_spec = thresholds.spec("isolation_breaches_max")
    assert users_spec.op is not None
    breach_op = breaches_spec.op
    assert breach_op is not None
    limit = thresholds.integer("isolation_breaches_max")
    counts = result.breach_counts()
    listed_ok = result.own_listed == result.own_expected_in_lists > 0
    read_ok = result.own_reads_ok == result.own_reads > 0
    errors = result.describe_errors()

    def breaches(name: str, channels: tuple[str, ...], control: bool, why: str) -> Check:
        seen = sum(counts[c] for c in channels)
        return Check(
            name,
            seen,
            limit,
            breach_op,
            detail=result.describe_breaches(channels, EXAMPLES),
            # No breach seen proves something only where the user saw its own data there.
            inconclusive="" if seen > limit or control else why,
        )

    return [
        Check(
            users_spec.criterion,
            result.users_ready,
            users,
            users_spec.op,
            unit=users_spec.unit,
            detail=errors,
        ),
        Check(
            "own_items_listed",
            result.own_listed,
            result.own_expected_in_lists,
            ">=",
            unit="items",
            detail="each user must find its own items in its own listings; " + errors,
            inconclusive="" if result.own_expected_in_lists else "no user listed anything",
        ),
        Check(
            "own_items_read",
            result.own_reads_ok,
            result.own_reads,
            ">=",
            unit="reads",
            detail="each user must read its own items back, with its canary; " + errors,
            inconclusive="" if result.own_reads else "no user read an item by id",
        ),
        breaches(
            "cross_user_listings",
            ("list", "sub_list"),
            listed_ok,
            "the users' own items were not all listed, so an empty listing proves nothing",
        ),
        breaches(
            "cross_user_reads",
            ("read", "update"),
            read_ok,
            "the users' own items could not all be read back",
        ),
        Check(
            "resource_probes_answered",
            result.probes_refused + result.probes_served,
            result.probes_sent,
            ">=",
            unit="probes",
            detail=errors,
            inconclusive="" if result.probes_sent else "no probe was sent",
        ),
        breaches(
            "cross_user_resource_access",
            ("probe", "probe_sub_list"),
            read_ok and result.probes_unanswered == 0 and result.probes_sent > 0,
            f"{result.probes_unanswered} of {result.probes_sent} probes went unanswered",
        ),
    ]


@in_session_loop
async def test_users_never_see_each_others_resources(
    apex_criteria: CriteriaRecorder,
    apex_new_user: UserMaker,
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
        deadline_s=DEADLINE_S,
    )
    result = await run_rest_isolation(spec, apex_new_user)  # type: ignore[arg-type]
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
