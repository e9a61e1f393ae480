"""The canary's latency judge: slower by enough and beyond doubt fails; anything thin or NaN is
no verdict. Samples are seeded, so every p-value here is the same on every run."""

from __future__ import annotations

import math
import random

import pytest

from pytest_apex.rollback.analysis import decide
from pytest_apex.rollback.canary import (
    DEFAULT_ALPHA,
    DEFAULT_MIN_SAMPLES,
    DEFAULT_TOLERANCE,
    KIND,
    compare_latencies,
)


def _latencies(n: int, *, median_s: float = 0.1, scale: float = 1.0, seed: int = 1) -> list[float]:
    """Log-normal response times (skewed, long-tailed, as latencies are) around `median_s`."""
    rng = random.Random(seed)
    return [scale * rng.lognormvariate(math.log(median_s), 0.3) for _ in range(n)]


def test_the_defaults_are_the_documented_ones() -> None:
    assert (DEFAULT_ALPHA, DEFAULT_TOLERANCE, DEFAULT_MIN_SAMPLES) == (0.01, 0.10, 20)


def test_identical_distributions_pass() -> None:
    result = compare_latencies(_latencies(300, seed=1), _latencies(300, seed=2))
    assert result.outcome == "pass"
    assert result.reason == ""
    assert result.p_value > DEFAULT_ALPHA
    assert result.ratio == pytest.approx(1.0, abs=0.1)
    assert (result.baseline_samples, result.candidate_samples) == (300, 300)


def test_the_very_same_samples_pass() -> None:
    same = _latencies(50)
    result = compare_latencies(same, same)
    assert (result.outcome, result.ratio) == ("pass", 1.0)
    assert result.p_value > 0.4


def test_a_clearly_slower_candidate_fails_with_its_numbers() -> None:
    baseline = _latencies(200, seed=1)
    candidate = _latencies(200, seed=2, scale=1.5)
    result = compare_latencies(baseline, candidate)
    assert result.outcome == "fail"
    assert result.reason == "the candidate is slower"
    assert result.p_value < 1e-6
    assert result.ratio == pytest.approx(1.5, rel=0.1)
    assert result.candidate_median_s > result.baseline_median_s * 1.1
    assert result.detail.startswith("the candidate is slower: candidate median 0.1")
    assert "limit 1.10x" in result.detail
    assert result.detail.endswith("samples: candidate 200, baseline 200")


def test_a_significant_but_tiny_slowdown_passes_by_the_tolerance() -> None:
    # 3 % slower on 5000 samples each: beyond doubt, and not worth a rollback.
    baseline = _latencies(5000, seed=1)
    candidate = _latencies(5000, seed=2, scale=1.03)
    result = compare_latencies(baseline, candidate)
    assert result.p_value < DEFAULT_ALPHA  # significant ...
    assert 1.0 < result.ratio < 1.1  # ... but small
    assert result.outcome == "pass"
    # without the tolerance the same numbers would fail
    assert compare_latencies(baseline, candidate, tolerance=0.0).outcome == "fail"


def test_a_slowdown_of_milliseconds_passes_by_the_absolute_floor() -> None:
    """60 % slower at a 6 ms median is 4 ms: significant, beyond 10 %, and felt by nobody."""
    baseline = _latencies(200, median_s=0.006, seed=1)
    candidate = _latencies(200, median_s=0.010, seed=2)
    assert compare_latencies(baseline, candidate).outcome == "fail"
    floored = compare_latencies(baseline, candidate, min_shift_s=0.05)
    assert floored.outcome == "pass"
    assert "limit 1.10x and +0.0500 s" in floored.detail
    slow = compare_latencies(baseline, _latencies(200, median_s=2.5, seed=2), min_shift_s=0.05)
    assert slow.outcome == "fail"


def test_a_large_but_doubtful_slowdown_passes_by_alpha() -> None:
    # 20 samples a side, medians apart by chance: large ratio, p above a strict alpha.
    baseline = [0.1] * 10 + [0.3] * 10
    candidate = [0.1] * 9 + [0.3] * 11
    result = compare_latencies(baseline, candidate)
    assert result.ratio > 1.1
    assert result.p_value > DEFAULT_ALPHA
    assert result.outcome == "pass"


def test_a_faster_candidate_passes() -> None:
    result = compare_latencies(_latencies(200, seed=1), _latencies(200, seed=2, scale=0.5))
    assert result.outcome == "pass"
    assert result.p_value > 0.99
    assert result.ratio < 0.6


@pytest.mark.parametrize(
    ("baseline_n", "candidate_n", "reason"),
    [
        (19, 200, "the baseline has 19 samples, fewer than the 20 needed"),
        (200, 0, "the candidate has 0 samples, fewer than the 20 needed"),
        (5, 3, "the baseline has 5 and the candidate has 3 samples, fewer than the 20 needed"),
    ],
)
def test_too_few_samples_are_inconclusive(baseline_n: int, candidate_n: int, reason: str) -> None:
    result = compare_latencies(_latencies(baseline_n), _latencies(candidate_n, scale=3.0))
    assert result.outcome == "inconclusive"
    assert result.reason == reason
    assert math.isnan(result.p_value)
    assert math.isnan(result.ratio)


def test_nan_in_the_data_is_inconclusive() -> None:
    candidate = [*_latencies(100, scale=2.0), math.nan, math.nan]
    result = compare_latencies(_latencies(100), candidate)
    assert result.outcome == "inconclusive"
    assert result.reason == "2 of the candidate's 102 samples are NaN or infinite"
    infinite = compare_latencies([*_latencies(100), math.inf], _latencies(100))
    assert infinite.reason == "1 of the baseline's 101 samples are NaN or infinite"


def test_a_zero_baseline_median_is_inconclusive() -> None:
    result = compare_latencies([0.0] * 30, _latencies(30))
    assert result.outcome == "inconclusive"
    assert result.reason == "the baseline's median is 0 s: no ratio to judge"
    assert result.baseline_median_s == 0.0


def test_the_minimum_can_be_set() -> None:
    result = compare_latencies(_latencies(10), _latencies(10, seed=2), min_samples=10)
    assert result.outcome == "pass"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"alpha": 0.0}, "alpha must be between 0 and 1"),
        ({"alpha": 1.0}, "alpha must be between 0 and 1"),
        ({"tolerance": -0.1}, "tolerance must be >= 0"),
        ({"min_samples": 0}, "min_samples must be >= 1"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        compare_latencies(_latencies(30), _latencies(30), **kwargs)


def test_a_negative_latency_is_a_bug() -> None:
    with pytest.raises(ValueError, match="below 0 s"):
        compare_latencies([*_latencies(30), -0.001], _latencies(30))


def test_the_comparison_is_a_performance_measurement_for_the_decision() -> None:
    slower = compare_latencies(_latencies(200, seed=1), _latencies(200, seed=2, scale=1.5))
    measurement = slower.to_measurement()
    assert (measurement.name, measurement.kind, measurement.outcome) == (
        "canary latency",
        KIND,
        "fail",
    )
    assert measurement.observed == slower.ratio
    assert measurement.threshold == pytest.approx(1.1)
    decision = decide([measurement])
    assert decision.action == "review"  # performance degradation: a human decides (§2)
    assert decision.drivers == ("canary latency",)
    thin = compare_latencies([], []).to_measurement("p50 canary")
    assert thin.outcome == "inconclusive"
    assert decide([thin]).action == "pause"
