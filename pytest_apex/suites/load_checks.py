"""The load suite's plan and criteria, from the thresholds in effect.

The report's load criteria (reference §3), per stage: success rate > 95 %, error rate < 1 %,
p95 < 2 s (over the stage and in every time window), average < 3 s, requests/s reported,
and, for an app with agent runs, the p95 of a run's time to its final WebSocket event. The
latency criteria judge HTTP answers only: an agent run's seconds (three simulated model waits
in the reference stack) are judged by their own threshold, not as a slow response.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Final

from pytest_apex.criteria import Criterion
from pytest_apex.load.result import StageResult
from pytest_apex.load.stages import ClosedStage, closed_plan
from pytest_apex.load.verdict import Threshold, to_check
from pytest_apex.recording import Check
from pytest_apex.reporting.load_report import stage_row
from pytest_apex.settings import Thresholds

# Op names the sessions time (`pytest_apex.adapters.base.LoadSessions`).
AGENT_FIRST: Final = "agent_first_event"  # a milestone inside the run, not a request
AGENT_FINAL: Final = "agent_final_event"
NOT_REQUESTS: Final = (AGENT_FIRST,)
NOT_RESPONSE_TIMES: Final = (AGENT_FIRST, AGENT_FINAL)
# Users start evenly over the first quarter of a stage, at most this long: 150 users
# arriving in the same millisecond measure the app's accept queue, not its service.
MAX_RAMP_S: Final = 5.0
RAMP_SHARE: Final = 0.25
EXAMPLES: Final = 3


def load_plan(thresholds: Thresholds) -> tuple[ClosedStage, ...]:
    """One closed stage per entry of `load_stages`, each `stage_duration_s` long."""
    duration = thresholds.seconds("stage_duration_s")
    ramp = min(MAX_RAMP_S, duration * RAMP_SHARE)
    return closed_plan((users, duration, ramp) for users in thresholds.stages("load_stages"))


def soak_plan(thresholds: Thresholds) -> tuple[tuple[ClosedStage, ...], int, float]:
    """The soak's load, how many times it runs and the seconds from one start to the next.

    With a `load_interval_s` (staging: 6 h) the staged plan runs every interval for
    `soak_duration_s` (24 h): the report's "load tests every 6 h during a 24 h validation".
    Without one (ci) the soak is compressed: `soak_users` held for `soak_duration_s`.
    """
    duration = thresholds.seconds("soak_duration_s")
    interval = thresholds.seconds("load_interval_s")
    if interval > 0:
        runs = max(1, math.ceil(duration / interval - 1e-9))
        return load_plan(thresholds), runs, interval
    ramp = min(MAX_RAMP_S, duration * RAMP_SHARE)
    return closed_plan([(thresholds.integer("soak_users"), duration, ramp)]), 1, duration


def planned_seconds(plan: Sequence[ClosedStage]) -> float:
    return sum(stage.duration_s for stage in plan)


def load_thresholds(thresholds: Thresholds, *, agent_runs: bool) -> list[Threshold]:
    """What every stage is judged by (names as the thresholds catalogue names them)."""
    p95 = thresholds.seconds("p95_s_max")
    judged = [
        Threshold(
            "success_rate",
            ">",
            thresholds.number("success_rate_min"),
            name="success_rate",
            exclude=NOT_REQUESTS,
        ),
        Threshold(
            "error_rate",
            "<",
            thresholds.number("error_rate_max"),
            name="error_rate",
            exclude=NOT_REQUESTS,
        ),
        Threshold("p95", "<", p95, name="p95", exclude=NOT_RESPONSE_TIMES),
        Threshold("p95", "<", p95, per_window=True, exclude=NOT_RESPONSE_TIMES),
        Threshold(
            "mean",
            "<",
            thresholds.seconds("avg_response_s_max"),
            name="avg_response",
            exclude=NOT_RESPONSE_TIMES,
        ),
        Threshold("requests_per_s", ">", 0.0, name="requests_per_s", exclude=NOT_REQUESTS),
    ]
    if agent_runs:
        judged.append(
            Threshold("p95", "<", thresholds.seconds("load_agent_p95_s_max"), op_name=AGENT_FINAL)
        )
    return judged


def describe_errors(stage: StageResult) -> str:
    """``errors: 5xx 31 (post 20, list 11), timeout 2 (login 2)``: by kind, then by op."""
    kinds = stage.errors
    if not kinds:
        return ""
    parts = []
    for kind, count in kinds.most_common():
        where = sorted(
            ((op.errors[kind], name) for name, op in stage.ops.items() if op.errors[kind]),
            reverse=True,
        )
        ops = ", ".join(f"{name} {n}" for n, name in where[:EXAMPLES])
        parts.append(f"{kind} {count} ({ops})")
    return "errors: " + ", ".join(parts)


def load_checks(stages: Sequence[StageResult], criteria: Sequence[Criterion]) -> list[Check]:
    """The criteria as checks for ``apex_criteria.judge``, each with its stage's errors."""
    by_index = {stage.index: stage for stage in stages}
    checks = []
    for criterion in criteria:
        stage = by_index.get(criterion.stage.index) if criterion.stage else None
        detail = describe_errors(stage) if stage is not None else ""
        # The stage is in the criterion's own message: the detail says what went wrong.
        checks.append(replace(to_check(criterion), detail=detail))
    return checks


def summary(stage: StageResult) -> dict[str, object]:
    """One stage in plain numbers, for the test's report properties.

    The load report's row (`stage_row`: percentiles, error rate, p95 by operation, over the
    HTTP operations; None where nothing was measured) and, as before, the errors by kind and
    the p95 of every operation, agent milestones included.
    """
    latency = stage.latency()
    return {
        **stage_row(stage, exclude=NOT_RESPONSE_TIMES),
        "stage": stage.index,
        "users": stage.target,
        "reached": stage.reached,
        "requests": stage.completed,
        "requests_per_s": round(stage.requests_per_s, 1),
        "errors": dict(stage.errors),
        "p95_s_all_ops": None if latency.count == 0 else round(latency.p95_s, 4),
        "generator_cpu_percent": stage.health.to_json()["cpu_percent"],
        "workers": stage.workers,
    }
