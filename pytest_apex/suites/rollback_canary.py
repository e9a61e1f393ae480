"""The canary analysis's measurements: health, a short load stage, an isolation smoke run.

Each check the suites already know how to make becomes a `Measurement` of the kind of issue
it would reveal (a row of the decision matrix). A check that could not run, or stands on too
few samples, stays inconclusive: nothing here turns "no data" into a pass. The latency of
the candidate is also judged against the baseline's from the same short stage (a one-sided
Mann-Whitney test, `pytest_apex.rollback.canary`). Where the app describes its monitoring,
the server's own view of the candidate's stage counts too: its p95 (a performance
degradation) and every alert firing during it, of the kind its rule's ``issue`` label names
when the decision matrix knows that kind (an unhealthy service otherwise).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping, Sequence
from typing import Final

from pytest_apex.criteria import Criterion
from pytest_apex.isolation.agent_scenario import (
    AgentScenarioResult,
    AgentScenarioSpec,
    MakeUser,
    run_agent_isolation,
)
from pytest_apex.load.availability import HealthCheck
from pytest_apex.load.engine import EngineSettings, SessionFactory, run_plan
from pytest_apex.load.result import StageResult
from pytest_apex.load.stages import ClosedStage
from pytest_apex.recording import Check
from pytest_apex.rollback.analysis import Measurement, measurement_from_criterion
from pytest_apex.rollback.canary import compare_latencies
from pytest_apex.rollback.matrix import DecisionMatrix
from pytest_apex.settings import Thresholds
from pytest_apex.suites.isolation_checks import agent_checks
from pytest_apex.suites.load_checks import NOT_RESPONSE_TIMES
from pytest_apex.suites.load_server import ServerView, server_checks

SUITE: Final = "rollback"
MIN_LATENCIES: Final = 20
SMOKE_USERS: Final = 6
# One calm round of concurrent runs: where a shared context or a broadcast shows at once.
# Cancels, reconnects, failures and floods are the isolation suite's full run; a smoke run
# that waited out their timeouts on a broken candidate would hold the decision a minute.
SMOKE_ROUNDS: Final = 1
SMOKE_DEADLINE_S: Final = 60.0
# The smoke run's checks that judge the candidate, and what each reveals. The isolation
# suite's others (enough users to bound a leak rate, every error path covered) need its
# full run; a smoke run of six users cannot make them and must not pause on them.
SMOKE_KINDS: Final[Mapping[str, str]] = {
    "cross_user_events": "isolation_failure",
    "late_foreign_frames": "isolation_failure",
    "cross_user_rest": "isolation_failure",
    "cross_user_identities": "isolation_failure",
    "cross_user_access": "isolation_failure",
    "runs_completed": "websocket_failures",
}


def criterion_of(check: Check) -> Criterion:
    """A check as a criterion that is *not* recorded: its outcome, for the analysis."""
    return Criterion(
        suite=SUITE,
        name=check.name,
        observed=float(check.observed),
        threshold=float(check.threshold),
        op=check.op,
        unit=check.unit,
        samples=check.samples,
        min_samples=check.min_samples,
        inconclusive=check.inconclusive,
    )


def measurement_of(check: Check, kind: str, prefix: str = "") -> Measurement:
    measured = measurement_from_criterion(criterion_of(check), kind)
    detail = f"{measured.detail}: {check.detail}" if check.detail else measured.detail
    name = f"{prefix}{measured.name}"
    return Measurement(name, kind, measured.outcome, detail, measured.observed, measured.threshold)


def health_measurements(checks: Mapping[str, HealthCheck]) -> list[Measurement]:
    """Every service with a health route answers healthy (a service with none: not judged)."""
    if not checks:
        return [
            Measurement(
                "health",
                "unhealthy_service",
                "inconclusive",
                "no service has a health route to ask (services.NAME.liveness / readiness)",
            )
        ]
    measured = []
    for name, check in checks.items():
        failure = check()
        measured.append(
            Measurement(
                f"health {name}",
                "unhealthy_service",
                "fail" if failure else "pass",
                failure or "healthy",
                observed=0.0 if failure else 1.0,
                threshold=1.0,
            )
        )
    return measured


async def canary_stage(
    sessions: SessionFactory, thresholds: Thresholds, engine: EngineSettings
) -> StageResult:
    """The short load stage each release runs (the same on both, and after a rollback)."""
    users = thresholds.integer("canary_users")
    duration = thresholds.seconds("canary_stage_s")
    stage = ClosedStage(users=users, duration_s=duration, ramp_s=min(2.0, duration / 4))
    result = await run_plan([stage], sessions, settings=engine)
    return result.stages[0]


def response_ops(stage: StageResult) -> list[str]:
    """The stage's request operations (an agent run's milestones are not responses)."""
    return [op for op in stage.ops if op not in NOT_RESPONSE_TIMES]


def latencies(stage: StageResult) -> list[float]:
    """Every successful response time of the stage in seconds, at the histograms' precision
    (three significant digits: ties, which Mann-Whitney ranks as such)."""
    values: list[float] = []
    for op in response_ops(stage):
        histogram = stage.ops[op].latency
        for item in histogram.get_recorded_iterator():
            count = item.count_added_in_this_iter_step
            values.extend([item.value_iterated_to / 1e6] * count)
    return values


def errors_and_requests(stage: StageResult) -> tuple[int, int]:
    ops = [stage.ops[op] for op in response_ops(stage)]
    return sum(o.error_count for o in ops), sum(o.count for o in ops)


def p95_s(samples: Sequence[float]) -> float:
    if not samples:
        return math.nan
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]


def load_checks(
    stage: StageResult, p95_max: float, error_rate_max: float, prefix: str
) -> list[Check]:
    """p95 and error rate of a canary stage's responses."""
    samples = latencies(stage)
    errors, requests = errors_and_requests(stage)
    error_kinds = ", ".join(f"{k} x{n}" for k, n in stage.errors.most_common(3))
    return [
        Check(
            f"{prefix}p95",
            p95_s(samples),
            p95_max,
            "<=",
            unit="s",
            detail=f"{len(samples)} responses of {stage.reached} users in {stage.elapsed_s:.1f} s",
            samples=len(samples),
            min_samples=MIN_LATENCIES,
        ),
        Check(
            f"{prefix}error_rate",
            errors / requests if requests else math.nan,
            error_rate_max,
            "<=",
            detail=f"{errors} of {requests} requests failed"
            + (f" ({error_kinds})" if errors else ""),
            samples=requests,
            min_samples=MIN_LATENCIES,
        ),
    ]


def load_measurements(
    baseline: StageResult, candidate: StageResult, thresholds: Thresholds
) -> list[Measurement]:
    """The candidate's stage against the SLOs, and its latencies against the baseline's."""
    errors_max = 1 - thresholds.number("success_rate_min")
    p95_check, error_check = load_checks(
        candidate, thresholds.seconds("p95_s_max"), errors_max, "canary "
    )
    comparison = compare_latencies(
        latencies(baseline),
        latencies(candidate),
        tolerance=thresholds.number("canary_tolerance"),
        min_shift_s=thresholds.seconds("canary_min_shift_s"),
    )
    return [
        measurement_of(p95_check, "performance_degradation"),
        measurement_of(error_check, "error_rate"),
        comparison.to_measurement("canary latency vs baseline"),
    ]


# The label of an alert rule naming the decision matrix's kind of issue it reveals.
ISSUE_LABEL: Final = "issue"
ALERT_KIND_DEFAULT: Final = "unhealthy_service"


def server_measurements(
    stage: StageResult, view: ServerView, thresholds: Thresholds, matrix: DecisionMatrix
) -> list[Measurement]:
    """The server's view of the candidate's stage: its p95, and each alert firing in it."""
    checks, windows = server_checks([stage], view, thresholds)
    by_name = {check.name: check for check in checks}
    measured: list[Measurement] = []
    if "server_p95" in by_name:
        measured.append(measurement_of(by_name["server_p95"], "performance_degradation", "canary "))
    alerts = by_name.get("server_alerts")
    if alerts is None:
        return measured
    firing = [a for w in windows for a in w.alerts if a.state == "firing"]
    if alerts.inconclusive or not firing:
        measured.append(measurement_of(alerts, ALERT_KIND_DEFAULT, "canary "))
    for alert in firing:
        kind = alert.labels.get(ISSUE_LABEL, "")
        labels = ", ".join(f"{k}={v}" for k, v in sorted(alert.labels.items()))
        measured.append(
            Measurement(
                f"canary alert {alert.name}",
                kind if kind in matrix.kinds else ALERT_KIND_DEFAULT,
                "fail",
                f"firing during the canary stage ({labels})",
                observed=1.0,
                threshold=0.0,
            )
        )
    return measured


async def isolation_measurements(
    make_user: MakeUser, thresholds: Thresholds, seed: int
) -> tuple[list[Measurement], AgentScenarioResult]:
    """A smoke run of the isolation scenario on the candidate, as measurements."""
    spec = AgentScenarioSpec(
        users=SMOKE_USERS,
        rounds=SMOKE_ROUNDS,
        seed=seed,
        burst=False,
        probes_per_round=1,
        # A run slower than the isolation suite's p95 limit did not complete in time.
        run_timeout_s=thresholds.seconds("isolation_run_p95_s_max"),
        drain_s=1.0,
        deadline_s=SMOKE_DEADLINE_S,
    )
    result = await asyncio.wait_for(run_agent_isolation(spec, make_user), SMOKE_DEADLINE_S + 60)
    checks = {c.name: c for c in agent_checks(result, thresholds, SMOKE_USERS)}
    measured = []
    for name, kind in SMOKE_KINDS.items():
        check = checks.get(name)
        if check is None:
            measured.append(
                Measurement(
                    f"smoke {name}", kind, "inconclusive", f"the smoke run made no {name} check"
                )
            )
        else:
            measured.append(measurement_of(check, kind, prefix="smoke "))
    return measured, result
