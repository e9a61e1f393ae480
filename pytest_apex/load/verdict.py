"""Judging a stage: thresholds per stage and in every time window, or no verdict at all.

``Threshold("p95", "<", 2.0)`` is the report's "p95 < 2 s" over the stage;
``Threshold("p95", "<", 2.0, per_window=True)`` holds only if it holds in *every* window
(k6 can judge only the whole run: grafana/k6 #1136, #2379), so a minute-long stall inside an
hour-long stage cannot hide behind the stage's p95.

The result is `pytest_apex.criteria.Criterion` values (suite ``load``, with their `Stage`),
which the recorder, the verdict and the reporters already understand. A criterion is
*inconclusive*, never a pass, when:

* it stands on too few samples: a percentile pNN needs ``100 / (100 - NN)`` of them (p95: 20,
  p99: 100), a rate threshold r needs ``1 / r`` (error rate < 1 %: 100), so the threshold is
  at least resolvable;
* the stage never reached its target (users that never all ran, a cap that cut it short);
* the generator was saturated (latency and throughput only: it measured itself);
* a worker's share is missing (`StageResult.lost`: a worker that died during the stage).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final, cast

from hdrh.histogram import HdrHistogram

from pytest_apex.criteria import Criterion, Op, Stage
from pytest_apex.load.measure import new_histogram, percentile_s
from pytest_apex.load.result import StageResult
from pytest_apex.recording import Check

SUITE: Final = "load"
LATENCY_METRICS: Final = ("p50", "p90", "p95", "p99", "max", "mean")
RATE_METRICS: Final = ("error_rate", "success_rate")
METRICS: Final = (*LATENCY_METRICS, *RATE_METRICS, "requests_per_s", "dropped")


@dataclass(frozen=True)
class Threshold:
    """`metric op value` over one operation (`op_name`) or all of them (None) but those
    `exclude` names (an agent run's seconds are not an HTTP response time)."""

    metric: str
    op: Op
    value: float
    op_name: str | None = None
    per_window: bool = False
    name: str | None = None  # the criterion's name; default e.g. "p95" or "login p95"
    exclude: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"unknown load metric {self.metric!r}; known: {', '.join(METRICS)}")
        if self.per_window and self.metric in ("requests_per_s", "dropped"):
            raise ValueError(f"{self.metric} is judged per stage, not per window")

    @property
    def unit(self) -> str:
        return "s" if self.metric in LATENCY_METRICS else ""

    def criterion_name(self, window_s: float) -> str:
        if self.name:
            return self.name
        base = f"{self.op_name} {self.metric}" if self.op_name else self.metric
        return f"{base} in every {window_s:g} s window" if self.per_window else base


def min_samples(threshold: Threshold) -> int:
    """How many observations the threshold needs before it can be judged (see module doc)."""
    metric = threshold.metric
    if metric.startswith("p"):
        return math.ceil(100 / (100 - int(metric[1:])) - 1e-9)
    if metric == "error_rate":
        return math.ceil(1 / threshold.value - 1e-9) if threshold.value > 0 else 1
    if metric == "success_rate":
        return math.ceil(1 / (1 - threshold.value) - 1e-9) if threshold.value < 1 else 1
    if metric == "dropped":
        return 0
    return 1


@dataclass(frozen=True)
class _Observation:
    value: float
    samples: int
    label: str = ""
    index: int = -1  # the window's index (-1: the whole stage)
    errors: int = 0


def _latency(histogram: HdrHistogram, metric: str) -> float:
    if histogram.get_total_count() == 0:
        return math.nan
    if metric == "max":
        return cast(int, histogram.get_max_value()) / 1e6
    if metric == "mean":
        return cast(float, histogram.get_mean_value()) / 1e6
    return percentile_s(histogram, float(metric[1:]))


def _rate(metric: str, ok: int, errors: int) -> float:
    total = ok + errors
    if not total:
        return math.nan
    return errors / total if metric == "error_rate" else ok / total


def _stage_observation(result: StageResult, threshold: Threshold) -> _Observation:
    ops = [result.ops[threshold.op_name]] if threshold.op_name in result.ops else []
    if threshold.op_name is None:
        ops = [op for name, op in result.ops.items() if name not in threshold.exclude]
    metric = threshold.metric
    ok = sum(op.ok for op in ops)
    errors = sum(op.error_count for op in ops)
    if metric in LATENCY_METRICS:
        histogram = new_histogram()
        for op in ops:
            histogram.add(op.latency)
        return _Observation(_latency(histogram, metric), ok)
    if metric in RATE_METRICS:
        return _Observation(_rate(metric, ok, errors), ok + errors)
    if metric == "requests_per_s":
        rps = (ok + errors) / result.elapsed_s if result.elapsed_s > 0 else math.nan
        return _Observation(rps, ok + errors)
    return _Observation(float(result.dropped), result.dropped)


def _window_observations(result: StageResult, threshold: Threshold) -> list[_Observation]:
    names = (
        [threshold.op_name]
        if threshold.op_name
        else [name for name in result.ops if name not in threshold.exclude]
    )
    observations = []
    for index in result.window_indexes():
        windows = [
            result.ops[name].windows[index]
            for name in names
            if name in result.ops and index in result.ops[name].windows
        ]
        if not windows:
            continue
        start = index * result.window_s
        label = f"window {index + 1} ({start:g}-{start + result.window_s:g} s)"
        ok = sum(w.count for w in windows)
        errors = sum(sum(w.errors.values()) for w in windows)
        if threshold.metric in LATENCY_METRICS:
            histogram = new_histogram()
            for window in windows:
                histogram.decode_and_add(window.blob)
            observations.append(
                _Observation(_latency(histogram, threshold.metric), ok, label, index, errors)
            )
        else:
            observations.append(
                _Observation(_rate(threshold.metric, ok, errors), ok + errors, label, index, errors)
            )
    return observations


def _breached(value: float, op: Op, limit: float) -> bool:
    probe = Criterion(SUITE, "probe", value, limit, op)
    return probe.outcome == "fail"


def _stage_reasons(result: StageResult, threshold: Threshold) -> list[str]:
    reasons = [f"{lost}: the stage measured only the other workers' share" for lost in result.lost]
    if not result.reached_target:
        what = "users" if result.model == "closed" else "scheduled sessions"
        why = "its request cap stopped it" if result.stopped_by == "max_requests" else "it ended"
        reasons.append(
            f"the stage never reached its target: {result.reached} of {result.target} {what} "
            f"before {why}"
        )
    if (
        threshold.metric in LATENCY_METRICS or threshold.metric == "requests_per_s"
    ) and result.health.saturated:
        reasons.append(result.health.saturation)
    return reasons


def judge_stage(result: StageResult, thresholds: Iterable[Threshold]) -> list[Criterion]:
    """One criterion per threshold for this stage (see the module doc for inconclusive)."""
    stage = Stage(
        result.index, result.count, result.target if result.model == "closed" else result.peak_users
    )
    criteria = []
    for threshold in thresholds:
        needed = min_samples(threshold)
        reasons = _stage_reasons(result, threshold)
        name = threshold.criterion_name(result.window_s)
        if threshold.op_name is not None and threshold.op_name not in result.ops:
            reasons.append(f"no {threshold.op_name!r} operation was run in this stage")
        if not threshold.per_window:
            seen = _stage_observation(result, threshold)
            criteria.append(
                Criterion(
                    SUITE,
                    name,
                    seen.value,
                    threshold.value,
                    threshold.op,
                    threshold.unit,
                    stage,
                    samples=None if threshold.metric == "dropped" else seen.samples,
                    min_samples=needed,
                    inconclusive="; ".join(reasons),
                )
            )
            continue
        criteria.append(_judge_windows(result, threshold, stage, name, needed, reasons))
    return criteria


def _judge_windows(
    result: StageResult,
    threshold: Threshold,
    stage: Stage,
    name: str,
    needed: int,
    reasons: list[str],
) -> Criterion:
    """The worst window decides: a breach in any judged window fails the stage.

    Windows with fewer samples than needed are not judged; if such a window saw errors
    (something was wrong there, but too little to measure) or no window could be judged,
    the criterion is inconclusive unless another window already failed.
    """
    observations = _window_observations(result, threshold)
    judged = [o for o in observations if o.samples >= needed and not math.isnan(o.value)]
    thin = [o for o in observations if o not in judged]
    breaches = [o for o in judged if _breached(o.value, threshold.op, threshold.value)]
    worst_first = sorted(judged, key=lambda o: o.value, reverse=threshold.op in ("<", "<="))
    if breaches:
        worst = sorted(breaches, key=lambda o: o.value, reverse=threshold.op in ("<", "<="))[0]
        shown = worst
    elif worst_first:
        shown = worst_first[0]
    else:
        shown = _Observation(math.nan, 0)
    unjudged = ""
    if not breaches:
        if not judged:
            unjudged = (
                f"no {result.window_s:g} s window had the {needed} samples needed "
                f"({len(observations)} windows)"
            )
        else:
            erring = [o for o in thin if o.errors and threshold.metric in LATENCY_METRICS]
            if erring:
                unjudged = (
                    f"{erring[0].label} had errors and only {erring[0].samples} timed samples "
                    f"(fewer than {needed}); it could not be judged"
                )
    where = f" in {shown.label}" if shown.label else ""
    inconclusive = "; ".join([*reasons, unjudged] if unjudged else reasons)
    return Criterion(
        SUITE,
        f"{name}{where}" if breaches else name,
        shown.value,
        threshold.value,
        threshold.op,
        threshold.unit,
        stage,
        samples=shown.samples,
        min_samples=needed,
        inconclusive=inconclusive,
    )


def judge_plan(stages: Sequence[StageResult], thresholds: Iterable[Threshold]) -> list[Criterion]:
    """`judge_stage` for every stage, in order."""
    thresholds = list(thresholds)
    return [criterion for stage in stages for criterion in judge_stage(stage, thresholds)]


def to_check(criterion: Criterion) -> Check:
    """A criterion as a `Check` for ``apex_criteria.judge`` (the stage goes in the detail)."""
    return Check(
        criterion.name,
        criterion.observed,
        criterion.threshold,
        criterion.op,
        unit=criterion.unit,
        detail=criterion.stage.describe() if criterion.stage else "",
        stage=criterion.stage,
        samples=criterion.samples,
        min_samples=criterion.min_samples,
        inconclusive=criterion.inconclusive,
    )
