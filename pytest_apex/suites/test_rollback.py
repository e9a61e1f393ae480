"""Rollback suite: upgrade, canary analysis, the decision, an automatic rollback, and proof
that no row was lost.

The staging report's rollback scripts did not exist (reference §1); the rollout controllers
that do roll back judge metrics only and never look at the data afterwards (reference §4).
For each candidate the description lists (`rollout.candidates`), the drill:

1. checks that the baseline answers as itself, and has drill users write rows through the
   API; snapshots those rows (owner and content digest) from the database;
2. runs a short load stage on the baseline, then deploys the candidate while a prober keeps
   asking every service's health, and has the users write again on the candidate;
3. analyses the candidate: health, the same short load stage (SLOs, and its latencies
   against the baseline's with a Mann-Whitney test), an isolation smoke run; every
   measurement passes, fails or is inconclusive;
4. decides with the decision matrix (data, `--apex-decision-matrix`): promote, rollback,
   review or pause; the decision must be the one the candidate expects;
5. on rollback, runs the documented rollback command and measures the RTO and the outage;
6. verifies on what runs afterwards: the release that answers, a write and read on it,
   every row written before and during the candidate still there and unchanged, each
   returned to its owner and to nobody else, the isolation-violation query empty, and after
   a rollback the report's post-rollback alert thresholds.

Whatever was decided, the baseline is deployed again afterwards, so the next candidate (or
the run's next suite) starts from it; that restore is not judged.
"""

from __future__ import annotations

import asyncio
import json
import math
import secrets
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from pytest_apex.adapters.base import ResourceSession
from pytest_apex.app.model import AppDescription, Candidate, Rollout
from pytest_apex.fixtures import UserMaker
from pytest_apex.isolation.database import DatabaseUnreachable, violations_of_users
from pytest_apex.load.availability import AvailabilityProber, HealthCheck
from pytest_apex.load.engine import EngineSettings, SessionFactory
from pytest_apex.load.memory import MetricMemory
from pytest_apex.recording import Check, CriteriaRecorder
from pytest_apex.rollback.analysis import Decision, decide
from pytest_apex.rollback.deploy import ContractRefused, DeployError, ReadRelease, refuse_contract
from pytest_apex.rollback.integrity import Snapshot, compare
from pytest_apex.rollback.matrix import DecisionMatrix
from pytest_apex.rollback.rows import active_connections, snapshot
from pytest_apex.settings import ApexSettings, Thresholds, settings_key
from pytest_apex.suites.load_checks import NOT_RESPONSE_TIMES
from pytest_apex.suites.load_fixtures import RouteCheck
from pytest_apex.suites.load_server import server_view
from pytest_apex.suites.rollback_canary import (
    canary_stage,
    health_measurements,
    isolation_measurements,
    load_checks,
    load_measurements,
    server_measurements,
)
from pytest_apex.suites.rollback_data import (
    Written,
    new_written,
    readback_checks,
    write_all,
    write_check,
)
from pytest_apex.suites.rollback_drill import (
    memory_check,
    outage_check,
    rto_check,
    within,
)
from pytest_apex.suites.rollback_fixtures import Deploy, RollBack
from pytest_apex.targets.base import Target

pytestmark = [pytest.mark.rollback, pytest.mark.asyncio(loop_scope="session")]

PROBE_S = 0.1
PROBER_MAX_S = 900.0
HEALTH_TIMEOUT_S = 10.0


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """One test per candidate of the description's rollout."""
    if "rollout_candidate" not in metafunc.fixturenames:
        return
    settings = metafunc.config.stash.get(settings_key, None)
    rollout = settings.app.rollout if settings is not None else None
    candidates = list(rollout.candidates) if rollout is not None else [None]
    metafunc.parametrize(
        "rollout_candidate", candidates, ids=[c.name if c else "no-rollout" for c in candidates]
    )


async def test_the_candidate_is_judged_and_a_rollback_keeps_every_row(
    rollout_candidate: Candidate | None,
    apex_rollout: Rollout,
    apex_criteria: CriteriaRecorder,
    apex_settings: ApexSettings,
    apex_app: AppDescription,
    apex_target: Target,
    apex_endpoints: dict[str, str],
    apex_new_user: UserMaker,
    apex_load_sessions: SessionFactory,
    apex_health_checks: dict[str, HealthCheck],
    apex_postgres_dsn: str,
    apex_read_release: ReadRelease,
    apex_deploy: Deploy,
    apex_roll_back: RollBack,
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    assert rollout_candidate is not None  # apex_rollout skipped a description without one
    candidate = rollout_candidate
    thresholds = apex_settings.thresholds
    baseline = apex_rollout.baseline
    resources = [r for r in apex_app.resources if r.create]
    if not resources:
        pytest.skip("the description names no resource users create (resources.NAME.create)")
    try:
        # Before anything changes: a contract step would strand the baseline.
        refuse_contract(apex_rollout, apex_rollout.releases[candidate.release])
    except ContractRefused as exc:
        pytest.fail(f"candidate {candidate.name} refused: {exc}", pytrace=False)
    await _ensure(apex_read_release, apex_deploy, baseline)
    phases = Phases()

    users = [await apex_new_user(i) for i in range(thresholds.integer("rollback_seed_users"))]
    sessions = [u for u in users if isinstance(u, ResourceSession)]
    if len(sessions) < len(users):
        pytest.skip("the adapter's users cannot create resources (ResourceSession)")
    owners = [s.user_id for s in sessions]
    written = new_written(sessions)
    await write_all(sessions, resources, written, "before")
    before = await snapshot(apex_postgres_dsn, apex_rollout.tables, owners)
    phases.mark("seed")
    engine = EngineSettings(
        window_s=thresholds.seconds("load_window_s"), live_exclude=NOT_RESPONSE_TIMES
    )
    baseline_stage = await canary_stage(apex_load_sessions, thresholds, engine)
    phases.mark("baseline")

    checks: list[Check] = [write_check(written, "before"), _snapshot_control(before, written)]
    report: dict[str, Any] = {
        "candidate": candidate.name,
        "release": candidate.release,
        "phases_s": phases.seconds,
    }
    rolled_back_at = math.nan
    prober = AvailabilityProber(apex_health_checks, PROBE_S, PROBER_MAX_S)
    try:
        with prober:
            started = time.monotonic()
            try:
                upgrade_s = await apex_deploy(candidate.release, candidate.faults)
            except DeployError as exc:
                pytest.fail(f"candidate {candidate.name} was not deployed: {exc}", pytrace=False)
            report["upgrade_s"] = round(upgrade_s, 2)
            phases.mark("upgrade")
            await write_all(sessions, resources, written, "during")
            checks.append(write_check(written, "during"))
            decision, analysis = await _analyse(
                apex_app, apex_endpoints, apex_load_sessions, apex_new_user, thresholds,
                engine, baseline_stage, apex_settings,
            )  # fmt: skip
            decided_at = time.monotonic()
            phases.mark("analysis")
            report["decision"] = decision.summary
            report["measurements"] = analysis
            held = await snapshot(apex_postgres_dsn, apex_rollout.tables, owners)
            expected = _before_and_during(before, held)
            checks.append(_decision_check(decision, candidate))
            if decision.action == "rollback":
                run = await apex_roll_back(baseline, decided_at)
                rolled_back_at = time.monotonic()
                phases.mark("rollback")
                report["rollback"] = {"command": run.command, "status": run.status}
                rto_max = thresholds.seconds("rollback_rto_s_max")
                checks.append(rto_check(run, rto_max))
                checks.append(
                    outage_check(prober, apex_rollout.service, decided_at - started, rto_max)
                )
        running = baseline if decision.action == "rollback" else candidate.release
        checks += await _verify(
            apex_app, apex_rollout, apex_read_release, running, sessions, resources, written,
            expected, apex_postgres_dsn, owners,
        )  # fmt: skip
        phases.mark("verify")
        if not math.isnan(rolled_back_at):
            checks += await _post_rollback_alerts(
                apex_app, apex_rollout, apex_target, apex_endpoints, apex_load_sessions,
                apex_postgres_dsn, thresholds, engine, rolled_back_at,
            )  # fmt: skip
            phases.mark("post_rollback_alerts")
    finally:
        report["availability"] = {
            name: {"probes": s.probes, "healthy": s.healthy, "outages": s.describe()}
            for name, s in prober.services.items()
        }
        _attach(request, tmp_path, report)
        # The next candidate, and the run's next suites, start from the baseline again.
        await _ensure(apex_read_release, apex_deploy, baseline)
        phases.mark("restore")
    apex_criteria.judge(checks)


class Phases:
    """Seconds each step of the drill took, in order (for the report: where time went)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._since = time.monotonic()

    def mark(self, name: str) -> None:
        now = time.monotonic()
        self.seconds[name] = round(now - self._since, 1)
        self._since = now


async def _ensure(read: ReadRelease, deploy: Deploy, release: str) -> None:
    """`release` answers (deployed again when something else does)."""
    if await asyncio.to_thread(read) == release:
        return
    try:
        await deploy(release, ())
    except DeployError as exc:
        pytest.fail(f"could not deploy {release}: {exc}", pytrace=False)


def _snapshot_control(before: Snapshot, written: Sequence[Written]) -> Check:
    """The snapshot must see the rows the API created: else the described tables (or the
    database the drill reads) are not the app's, and no comparison would mean anything."""
    created = sum(len(w.items) for w in written)
    return Check(
        "snapshot_sees_writes",
        len(before.rows),
        created,
        ">=",
        unit="rows",
        detail=f"{created} rows created through the API; the snapshot of rollout.tables read "
        f"{len(before.rows)} of their owners' rows",
        samples=created,
        min_samples=1,
    )


def _before_and_during(before: Snapshot, held: Snapshot) -> Snapshot:
    """Rows from before the candidate as they were then, plus the rows written during it."""
    during = {key: row for key, row in held.rows.items() if key not in before.rows}
    return Snapshot({**before.rows, **during})


async def _analyse(
    app: AppDescription,
    endpoints: dict[str, str],
    sessions: SessionFactory,
    new_user: UserMaker,
    thresholds: Thresholds,
    engine: EngineSettings,
    baseline_stage: Any,
    settings: ApexSettings,
) -> tuple[Decision, list[dict[str, Any]]]:
    with httpx.Client(timeout=HEALTH_TIMEOUT_S) as client:
        checks: dict[str, HealthCheck] = {}
        for name, service in app.services.items():
            route = service.readiness or service.liveness
            if route is not None and name in endpoints:
                checks[name] = RouteCheck(client, endpoints[name].rstrip("/") + route.path, route)
        measurements = await asyncio.to_thread(health_measurements, checks)
    candidate_stage = await canary_stage(sessions, thresholds, engine)
    measurements += load_measurements(baseline_stage, candidate_stage, thresholds)
    view = server_view(app, endpoints)
    try:
        matrix = settings.decision_matrix or DecisionMatrix.default()
        measurements += await asyncio.to_thread(
            server_measurements, candidate_stage, view, thresholds, matrix
        )
    finally:
        if view.api is not None:
            view.api.close()
    if app.capabilities.agent_runs:
        offset = 1000

        async def make_user(index: int) -> Any:
            return await new_user(offset + index)

        seed = settings.seed if settings.seed is not None else secrets.randbelow(2**31)
        smoke, _ = await isolation_measurements(make_user, thresholds, seed)
        measurements += smoke
    decision = decide(measurements, settings.decision_matrix)
    analysis = [
        {"name": m.name, "kind": m.kind, "outcome": m.outcome, "detail": m.detail}
        for m in measurements
    ]
    return decision, analysis


def _decision_check(decision: Decision, candidate: Candidate) -> Check:
    return Check(
        "decision",
        1 if decision.action == candidate.expect else 0,
        1,
        "==",
        detail=f"expected {candidate.expect}, decided {decision.summary}",
    )


async def _verify(
    app: AppDescription,
    rollout: Rollout,
    read: ReadRelease,
    running: str,
    sessions: Sequence[ResourceSession],
    resources: Sequence[Any],
    written: Sequence[Written],
    expected: Snapshot,
    dsn: str,
    owners: Sequence[str],
) -> list[Check]:
    answering = await asyncio.to_thread(read)
    checks = [
        Check(
            "release_answering",
            1 if answering == running else 0,
            1,
            "==",
            detail=f"{rollout.service} answers as {answering or 'nothing'}, expected {running}",
        )
    ]
    await write_all(sessions, resources, written, "after")
    checks.append(write_check(written, "after"))
    restored = await snapshot(dsn, rollout.tables, owners)
    checks += compare(expected, restored).checks()
    checks += await readback_checks(sessions, resources, written)
    if app.database is not None and app.database.violations_query:
        try:
            violations = await violations_of_users(dsn, owners)
            checks.append(
                Check(
                    "isolation_violations",
                    len(violations),
                    0,
                    "<=",
                    detail=f"{len(violations)} agent instances seen under two users"
                    if violations
                    else "the violations query is empty for the drill's users",
                    samples=len(owners),
                    min_samples=1,
                )
            )
        except DatabaseUnreachable as exc:
            checks.append(Check("isolation_violations", math.nan, 0, "<=", inconclusive=str(exc)))
    return checks


async def _post_rollback_alerts(
    app: AppDescription,
    rollout: Rollout,
    target: Target,
    endpoints: dict[str, str],
    sessions: SessionFactory,
    dsn: str,
    thresholds: Thresholds,
    engine: EngineSettings,
    rolled_back_at: float,
) -> list[Check]:
    """The report's post-rollback alert thresholds, each measured within its window."""
    stage = await canary_stage(sessions, thresholds, engine)
    after = time.monotonic() - rolled_back_at
    p95, errors = load_checks(
        stage,
        thresholds.seconds("rollback_p95_s_max"),
        thresholds.number("rollback_error_rate_max"),
        "post_rollback_",
    )
    checks = [
        within("post_rollback_p95", p95, after, thresholds.seconds("rollback_p95_window_s")),
        within(
            "post_rollback_error_rate", errors, after, thresholds.seconds("rollback_error_window_s")
        ),
    ]
    used, limits = await asyncio.to_thread(_memory_of, app, rollout, target, endpoints)
    checks.append(
        within(
            "post_rollback_memory_ratio",
            memory_check(used, limits, thresholds.number("rollback_memory_ratio_max")),
            time.monotonic() - rolled_back_at,
            thresholds.seconds("rollback_memory_window_s"),
        )
    )
    maximum = thresholds.number("rollback_connections_max")
    try:
        connections = Check(
            "post_rollback_connections",
            await active_connections(dsn),
            maximum,
            "<=",
            unit="connections",
            detail="connections the database holds",
        )
    except DatabaseUnreachable as exc:
        connections = Check(
            "post_rollback_connections", math.nan, maximum, "<=", inconclusive=str(exc)
        )
    checks.append(
        within(
            "post_rollback_connections",
            connections,
            time.monotonic() - rolled_back_at,
            thresholds.seconds("rollback_connections_window_s"),
        )
    )
    return checks


def _memory_of(
    app: AppDescription, rollout: Rollout, target: Target, endpoints: dict[str, str]
) -> tuple[dict[str, float], dict[str, int]]:
    """The rolled-back service's resident memory (its gauge) and its container's limit."""
    service = app.services[rollout.service]
    running = [
        info.memory_limit_bytes
        for info in target.containers()
        if info.service == rollout.service and info.state == "running"
    ]
    limits = {rollout.service: max(running, default=0)}
    if service.metrics is None or rollout.service not in endpoints:
        return {}, limits
    with httpx.Client(timeout=HEALTH_TIMEOUT_S) as client:
        url = endpoints[rollout.service].rstrip("/") + service.metrics.path
        try:
            value = MetricMemory(client, url, service.metrics.memory).read()
        except Exception:  # no reading is an inconclusive memory check, said there
            return {}, limits
    return {rollout.service: value}, limits


def _attach(request: pytest.FixtureRequest, tmp_path: Path, report: dict[str, Any]) -> None:
    """The drill's story (decision, measurements, availability) in the test's report."""
    text = json.dumps(report, indent=2, default=str)
    (tmp_path / "rollback-drill.json").write_text(text, encoding="utf-8")
    request.node.user_properties.append(("rollback", text))
