"""The load generator's own health: is it measuring the target, or itself?

A generator at 100 % of its core sends late and reads late, so every latency it reports
includes its own queueing. Each stage therefore measures the generator's process CPU
(psutil, 100 % = one core) and its event-loop lag (a ticker asking to wake every
`interval_s` and timing how late it woke). A stage whose generator was saturated has its
latency criteria judged *inconclusive*, never passed or failed on numbers it made up.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol

from pytest_apex.load.measure import Tally, new_histogram, to_us

CPU_LIMIT_PERCENT: Final = 90.0  # of one core
LAG_P99_LIMIT_S: Final = 0.05  # a request timed 50 ms late at p99 is the generator's own delay
TICK_S: Final = 0.01


class Clock(Protocol):
    """The engine's time: `now()` in seconds on a monotonic scale, and `sleep`."""

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


@dataclass(frozen=True)
class GeneratorHealth:
    """How busy the generator was during one stage (worst worker, when merged)."""

    cpu_percent: float  # of one core, averaged over the stage; NaN when not measured
    lag_p99_s: float
    lag_max_s: float
    ticks: int
    cpu_limit_percent: float = CPU_LIMIT_PERCENT
    lag_p99_limit_s: float = LAG_P99_LIMIT_S

    @property
    def saturation(self) -> str:
        """Why the generator was saturated ("" when it was not)."""
        causes = []
        if self.cpu_percent >= self.cpu_limit_percent:
            causes.append(
                f"its CPU was {self.cpu_percent:.0f} % of one core "
                f"(>= {self.cpu_limit_percent:.0f} %)"
            )
        if self.lag_p99_s > self.lag_p99_limit_s:
            causes.append(
                f"its event loop ran {self.lag_p99_s * 1000:.0f} ms late at p99 "
                f"(max {self.lag_max_s * 1000:.0f} ms, limit {self.lag_p99_limit_s * 1000:.0f} ms)"
            )
        if not causes:
            return ""
        return (
            "the load generator was saturated: "
            + " and ".join(causes)
            + "; it measured itself, not the target (use more workers, fewer users, or a "
            "lighter scenario)"
        )

    @property
    def saturated(self) -> bool:
        return bool(self.saturation)

    def to_json(self) -> dict[str, Any]:
        return {
            "cpu_percent": _finite(self.cpu_percent),
            "lag_p99_s": _finite(self.lag_p99_s),
            "lag_max_s": _finite(self.lag_max_s),
            "ticks": self.ticks,
            "cpu_limit_percent": self.cpu_limit_percent,
            "lag_p99_limit_s": self.lag_p99_limit_s,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GeneratorHealth:
        def number(key: str) -> float:
            value = data[key]
            return math.nan if value is None else float(value)

        return cls(
            cpu_percent=number("cpu_percent"),
            lag_p99_s=number("lag_p99_s"),
            lag_max_s=number("lag_max_s"),
            ticks=int(data["ticks"]),
            cpu_limit_percent=float(data["cpu_limit_percent"]),
            lag_p99_limit_s=float(data["lag_p99_limit_s"]),
        )

    def worst(self, other: GeneratorHealth) -> GeneratorHealth:
        """The worse of two workers' health (the merged stage is as good as its worst)."""
        return GeneratorHealth(
            cpu_percent=_nanmax(self.cpu_percent, other.cpu_percent),
            lag_p99_s=_nanmax(self.lag_p99_s, other.lag_p99_s),
            lag_max_s=_nanmax(self.lag_max_s, other.lag_max_s),
            ticks=self.ticks + other.ticks,
            cpu_limit_percent=self.cpu_limit_percent,
            lag_p99_limit_s=self.lag_p99_limit_s,
        )


def process_cpu_percent() -> Callable[[], float]:
    """psutil's CPU of this process since the previous call (100 = one core)."""
    import psutil

    process = psutil.Process()
    return lambda: process.cpu_percent(interval=None)


class GeneratorMonitor:
    """Measures one stage: `start()` when it begins, `await stop()` when it ends."""

    def __init__(
        self,
        clock: Clock,
        *,
        cpu_percent: Callable[[], float] | None = None,
        tick_s: float = TICK_S,
        cpu_limit_percent: float = CPU_LIMIT_PERCENT,
        lag_p99_limit_s: float = LAG_P99_LIMIT_S,
    ) -> None:
        self._clock = clock
        self._cpu = cpu_percent if cpu_percent is not None else process_cpu_percent()
        self._tick_s = tick_s
        self._limits = (cpu_limit_percent, lag_p99_limit_s)
        self._lag = Tally()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._cpu()  # psutil: the first call starts the interval the next one measures
        self._lag = Tally()
        self._task = asyncio.get_running_loop().create_task(self._tick())

    async def stop(self) -> GeneratorHealth:
        cpu = self._cpu()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        histogram = new_histogram()
        self._lag.into(histogram)
        ticks = histogram.get_total_count()
        lag_p99 = histogram.get_value_at_percentile(99) / 1e6 if ticks else math.nan
        lag_max = histogram.get_max_value() / 1e6 if ticks else math.nan
        return GeneratorHealth(cpu, lag_p99, lag_max, ticks, *self._limits)

    async def _tick(self) -> None:
        clock, tick = self._clock, self._tick_s
        while True:
            before = clock.now()
            await clock.sleep(tick)
            self._lag.add(to_us(max(0.0, clock.now() - before - tick)))


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _nanmax(a: float, b: float) -> float:
    if math.isnan(a):
        return b
    if math.isnan(b):
        return a
    return max(a, b)
