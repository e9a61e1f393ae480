"""Memory trends: a leak is a steep line, flat is flat, a sawtooth or a short run is no verdict."""

from __future__ import annotations

import math
import random

import pytest

from pytest_apex.load.memory import MemoryGates, MemorySeries, memory_checks
from pytest_apex.load.trend import after_warmup, fit

MIB = 1024 * 1024
GATES = MemoryGates(variance_max=0.05, slope_kb_per_h_max=8192.0, warmup_s=10.0)


def _series(
    slope_b_per_s: float,
    *,
    noise_b: float = 0.0,
    seconds: int = 120,
    base: float = 100 * MIB,
    seed: int = 7,
) -> list[tuple[float, float]]:
    rng = random.Random(seed)
    return [(float(t), base + slope_b_per_s * t + rng.gauss(0, noise_b)) for t in range(seconds)]


def _by_name(series: MemorySeries, gates: MemoryGates = GATES) -> dict[str, object]:
    return {check.name.split()[0]: check for check in memory_checks([series], gates)}


def test_fit_recovers_a_known_slope_with_an_interval_around_it() -> None:
    trend = fit(_series(1000.0, noise_b=10_000))
    assert trend.slope_low < 1000.0 < trend.slope_high
    assert trend.points == 120
    assert trend.r2 > 0.5


def test_after_warmup_drops_the_first_seconds() -> None:
    samples = _series(0.0, seconds=30)
    assert after_warmup(samples, 10.0)[0][0] == 10.0
    assert after_warmup([], 10.0) == []


def test_a_flat_series_passes_both_gates() -> None:
    checks = _by_name(MemorySeries("backend", _series(0.0, noise_b=100_000)))
    assert checks["memory_slope"].observed <= 8192.0  # the upper bound, in KB/h
    assert checks["memory_variance"].observed < 0.05


def test_a_slow_leak_fails_the_slope_while_the_variance_passes() -> None:
    # 1 MiB a minute on 100 MiB over two minutes: variance about 0.6 %, slope 60 MiB/h.
    checks = _by_name(MemorySeries("backend", _series(MIB / 60, noise_b=100_000)))
    slope, variance = checks["memory_slope"], checks["memory_variance"]
    assert slope.observed > 8192.0, slope
    assert not slope.inconclusive, slope
    assert variance.observed < 0.05
    assert "r²" in slope.detail
    assert "KB/h" in slope.detail


def test_a_sawtooth_is_inconclusive_not_a_pass() -> None:
    # Fills and frees 40 MiB every 20 s on top of a gentle climb: steep but not a line.
    samples = [(float(t), 100 * MIB + (t % 20) * 2 * MIB + t * 2_000) for t in range(120)]
    slope = _by_name(MemorySeries("backend", samples))["memory_slope"]
    assert slope.inconclusive, slope


def test_an_interval_that_straddles_the_limit_is_inconclusive() -> None:
    noisy = _series(300.0, noise_b=5 * MIB, seconds=40)
    slope = _by_name(MemorySeries("backend", noisy))["memory_slope"]
    assert "straddles" in slope.inconclusive, slope


def test_too_few_samples_are_not_judged() -> None:
    checks = _by_name(MemorySeries("backend", _series(0.0, seconds=15)))
    assert checks["memory_slope"].samples == 5
    assert checks["memory_slope"].min_samples == 10


def test_no_memory_source_at_all_is_inconclusive_naming_what_to_give() -> None:
    (check,) = memory_checks([], GATES, missing=("auth",))
    assert math.isnan(check.observed)
    assert "auth" in check.inconclusive
    assert "metrics.memory" in check.inconclusive


def test_a_broken_sampler_makes_every_gate_inconclusive() -> None:
    series = MemorySeries("backend", _series(0.0))
    checks = memory_checks([series], GATES, error=RuntimeError("boom"))
    assert all("sampler stopped" in c.inconclusive for c in checks)


@pytest.mark.parametrize("points", [0, 1, 2])
def test_fit_of_almost_nothing_is_nan(points: int) -> None:
    trend = fit(_series(0.0, seconds=points))
    assert math.isnan(trend.slope)


def test_a_series_that_never_moves_is_flat() -> None:
    trend = fit([(float(t), 5.0) for t in range(20)])
    assert (trend.slope, trend.slope_low, trend.slope_high) == (0.0, 0.0, 0.0)
    assert trend.reading(1.0, r2_min=0.5) == "flat"
