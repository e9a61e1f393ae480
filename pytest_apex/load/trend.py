"""A resource's trend over a run: least-squares growth with its confidence interval.

The report's "memory variance < 5 % over 24 h" passes real leaks: a process that grows by a
few percent a day has a small variance and a steady climb (reference §4). What catches them
is the slope of a least-squares line through the samples after a warm-up, judged by its 95 %
confidence interval and by r², how well a line explains the samples at all:

* the whole interval below the limit: no leak the run could resolve, whatever r² says (a flat
  line has r² near 0 by nature);
* the whole interval above the limit, and r² high: a leak;
* anything else is not a verdict: a sawtooth (steep but not a line), or an interval that
  straddles the limit because the run was too short or too noisy to tell.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

Reading = Literal["flat", "growing", "unclear"]
# Fewer points than this carry no slope worth an interval: a line through 3 points always
# fits well, and its interval is too wide to be read either way.
MIN_POINTS: Final = 10
CONFIDENCE: Final = 0.95


@dataclass(frozen=True)
class Trend:
    """A series after its warm-up: `slope` and its interval in units per second."""

    points: int
    span_s: float
    mean: float
    relative_sd: float  # standard deviation / mean: what the report calls "variance"
    slope: float
    slope_low: float
    slope_high: float
    r2: float

    def reading(self, limit_per_s: float, *, r2_min: float) -> Reading:
        """What the trend says against a growth limit (see the module doc)."""
        if self.points < MIN_POINTS or math.isnan(self.slope_high):
            return "unclear"
        if self.slope_high <= limit_per_s:
            return "flat"
        if self.slope_low > limit_per_s and self.r2 >= r2_min:
            return "growing"
        return "unclear"


def after_warmup(
    samples: Sequence[tuple[float, float]], warmup_s: float
) -> list[tuple[float, float]]:
    """The samples taken at least `warmup_s` after the first one: a process fills its
    caches and pools first, which is growth but not a leak."""
    if not samples:
        return []
    start = samples[0][0] + warmup_s
    return [(t, v) for t, v in samples if t >= start]


def fit(samples: Sequence[tuple[float, float]]) -> Trend:
    """Least squares through `(seconds, value)` samples; NaN fields when it cannot be fitted
    (fewer than three points, or every sample at the same time)."""
    times = [t for t, _ in samples]
    values = [v for _, v in samples]
    points = len(samples)
    mean = sum(values) / points if points else math.nan
    spread = _sd(values, mean)
    relative = spread / mean if mean and not math.isnan(mean) else math.nan
    span = times[-1] - times[0] if points else 0.0
    if points < 3 or span <= 0:
        return Trend(points, span, mean, relative, math.nan, math.nan, math.nan, math.nan)
    if max(values) == min(values):  # not one byte moved: flat, with no doubt about it
        return Trend(points, span, mean, relative, 0.0, 0.0, 0.0, 0.0)
    from scipy import stats  # imported here: it is slow to import and only a soak needs it

    line = stats.linregress(times, values)
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, points - 2)) * float(line.stderr)
    slope = float(line.slope)
    r2 = float(line.rvalue) ** 2 if not math.isnan(float(line.rvalue)) else 0.0
    return Trend(points, span, mean, relative, slope, slope - half, slope + half, r2)


def _sd(values: Sequence[float], mean: float) -> float:
    if len(values) < 2:
        return math.nan
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
