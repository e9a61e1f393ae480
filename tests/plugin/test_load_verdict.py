"""Judging stages: per stage and in every window, and inconclusive when it cannot be told."""

from __future__ import annotations

import math

import pytest

from pytest_apex.load.generator import GeneratorHealth
from pytest_apex.load.measure import StageRecorder
from pytest_apex.load.result import StageResult
from pytest_apex.load.verdict import Threshold, judge_plan, judge_stage, min_samples, to_check

CALM = GeneratorHealth(cpu_percent=20.0, lag_p99_s=0.002, lag_max_s=0.004, ticks=100)
P95 = Threshold("p95", "<", 2.0)
P95_WINDOWS = Threshold("p95", "<", 2.0, per_window=True)


def _stage(
    recorder: StageRecorder,
    *,
    target: int = 10,
    reached: int = 10,
    health: GeneratorHealth = CALM,
    elapsed_s: float = 200.0,
) -> StageResult:
    return StageResult(
        index=2,
        count=5,
        model="closed",
        description=f"{target} users",
        target=target,
        reached=reached,
        duration_s=elapsed_s,
        elapsed_s=elapsed_s,
        window_s=recorder.window_s,
        health=health,
        ops=recorder.finish(),
        peak_users=reached,
    )


def _steady(windows: int = 20, per_window: int = 100, latency: float = 0.05) -> StageRecorder:
    recorder = StageRecorder(window_s=10)
    for w in range(windows):
        for i in range(per_window):
            recorder.record("get", w * 10 + i * 0.09, latency)
    return recorder


def test_one_bad_window_fails_although_the_stage_p95_passes():
    recorder = _steady()
    for i in range(30):  # window 8 (70-80 s): 30 of its 100 samples at 3 s
        recorder.record("get", 70 + i * 0.3, 3.0)
    stage = _stage(recorder)
    whole, windows = judge_stage(stage, [P95, P95_WINDOWS])
    assert whole.outcome == "pass"  # 30 slow of 2,030: the stage's p95 hides them
    assert windows.outcome == "fail"
    assert windows.observed == pytest.approx(3.0, rel=0.001)
    assert "window 8 (70-80 s)" in windows.name
    assert "p95 in every 10 s window" in windows.message
    assert "at 10 users (stage 2/5)" in windows.message


def test_every_window_passing_passes():
    (criterion,) = judge_stage(_stage(_steady()), [P95_WINDOWS])
    assert criterion.outcome == "pass"
    assert criterion.observed == pytest.approx(0.05, rel=0.001)


def test_p95_from_fewer_than_20_samples_is_inconclusive():
    assert min_samples(P95) == 20
    recorder = StageRecorder()
    for i in range(19):
        recorder.record("get", i * 0.1, 0.01)
    (criterion,) = judge_stage(_stage(recorder), [P95])
    assert criterion.outcome == "inconclusive"
    assert "19 samples, fewer than the 20 needed" in criterion.reason
    recorder.record("get", 1.95, 0.01)
    (criterion,) = judge_stage(_stage(recorder), [P95])
    assert criterion.outcome == "pass"


def test_windows_too_thin_to_judge_are_inconclusive():
    (criterion,) = judge_stage(_stage(_steady(windows=5, per_window=10)), [P95_WINDOWS])
    assert criterion.outcome == "inconclusive"
    assert "no 10 s window had the 20 samples needed" in criterion.reason


def test_a_thin_window_with_errors_is_not_passed_over():
    recorder = _steady(windows=3)
    for i in range(40):  # window 4: everything failed, 3 answers got through
        recorder.record("get", 30 + i * 0.2, 0, error="timeout")
    for i in range(3):
        recorder.record("get", 30 + i, 0.05)
    (criterion,) = judge_stage(_stage(recorder), [P95_WINDOWS])
    assert criterion.outcome == "inconclusive"
    assert "window 4 (30-40 s) had errors" in criterion.reason


def test_a_stage_that_never_reached_its_users_is_inconclusive_never_a_pass():
    stage = _stage(_steady(), target=150, reached=90)
    for criterion in judge_stage(stage, [P95, P95_WINDOWS, Threshold("error_rate", "<", 0.01)]):
        assert criterion.outcome == "inconclusive"
        assert "never reached its target: 90 of 150 users" in criterion.reason


def test_a_saturated_generator_makes_latency_inconclusive_but_errors_still_count():
    hot = GeneratorHealth(cpu_percent=99.0, lag_p99_s=0.002, lag_max_s=0.01, ticks=100)
    recorder = _steady()
    for i in range(100):
        recorder.record("get", i, 0, error="5xx")
    p95, errors, rps = judge_stage(
        _stage(recorder, health=hot),
        [P95, Threshold("error_rate", "<", 0.01), Threshold("requests_per_s", ">", 1)],
    )
    assert p95.outcome == "inconclusive"
    assert "generator was saturated" in p95.reason
    assert "measured itself" in p95.reason
    assert rps.outcome == "inconclusive"
    assert errors.outcome == "fail"  # 100 of 2,100 failed whoever was busy


def test_rates_throughput_and_dropped():
    recorder = _steady(windows=1, per_window=99)
    recorder.record("get", 5, 0, error="5xx")
    stage = _stage(recorder, elapsed_s=10)
    stage.dropped = 3
    error_rate, success, rps, dropped = judge_stage(
        stage,
        [
            Threshold("error_rate", "<", 0.02),
            Threshold("success_rate", ">", 0.95),
            Threshold("requests_per_s", ">=", 10),
            Threshold("dropped", "<=", 0),
        ],
    )
    assert (error_rate.outcome, error_rate.observed) == ("pass", 0.01)
    assert success.outcome == "pass"
    assert (rps.outcome, rps.observed) == ("pass", 10)
    assert (dropped.outcome, dropped.observed) == ("fail", 3)


def test_rate_thresholds_need_enough_samples_to_resolve_them():
    assert min_samples(Threshold("error_rate", "<", 0.01)) == 100
    recorder = _steady(windows=1, per_window=50)
    (criterion,) = judge_stage(_stage(recorder), [Threshold("error_rate", "<", 0.01)])
    assert criterion.outcome == "inconclusive"


def test_an_operation_that_never_ran_is_inconclusive():
    (criterion,) = judge_stage(_stage(_steady()), [Threshold("p95", "<", 2, op_name="login")])
    assert criterion.outcome == "inconclusive"
    assert "no 'login' operation" in criterion.reason
    assert math.isnan(criterion.observed)


def test_judge_plan_and_checks_for_the_recorder():
    criteria = judge_plan([_stage(_steady())], [P95])
    check = to_check(criteria[0])
    assert (check.name, check.op, check.threshold, check.unit) == ("p95", "<", 2.0, "s")
    assert check.detail == "at 10 users (stage 2/5)"
    with pytest.raises(ValueError, match="unknown load metric"):
        Threshold("p42x", "<", 1)


def test_excluded_operations_stay_out_of_an_all_operations_threshold():
    recorder = _steady(windows=2, per_window=50, latency=0.05)
    for i in range(50):
        recorder.record("agent_final_event", i * 0.2, 9.0)  # an agent run: not a response time
    stage = _stage(recorder)
    everything, http = judge_stage(
        stage,
        [
            Threshold("p95", "<", 2.0, per_window=True),
            Threshold("p95", "<", 2.0, per_window=True, exclude=("agent_final_event",)),
        ],
    )
    assert everything.outcome == "fail"
    assert (http.outcome, http.observed) == ("pass", pytest.approx(0.05, rel=0.01))
    assert to_check(http).stage == http.stage is not None
