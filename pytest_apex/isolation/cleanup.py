"""Cleanup: live resources (sockets, execution contexts) return to their level at rest.

Leaked contexts are where the next user's data comes from, so once the users are gone the
app's gauges of live resources must fall back to their baseline (read before the users
came) within a bounded time. Read with a deadline, never a fixed wait; a gauge that cannot
be read makes the check inconclusive, not passed.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

ReadGauges = Callable[[], Awaitable[Mapping[str, float]]]


@dataclass
class CleanupResult:
    baseline: dict[str, float] = field(default_factory=dict)
    last: dict[str, float] = field(default_factory=dict)
    seconds: float = math.nan  # until every gauge was back at baseline (NaN: never)
    error: str = ""  # why the gauges could not be read

    @property
    def stuck(self) -> dict[str, float]:
        """Gauges still above their baseline at the last reading."""
        return {k: v for k, v in self.last.items() if v > self.baseline.get(k, 0.0)}


async def wait_for_rest(
    read: ReadGauges,
    baseline: Mapping[str, float],
    timeout_s: float,
    *,
    settle_readings: int = 2,
    interval_s: float = 0.25,
    clock: Callable[[], float] = time.monotonic,
) -> CleanupResult:
    """Poll until every gauge is at or below its baseline `settle_readings` times in a row
    (a balancer may send each reading to another replica), or until `timeout_s`."""
    result = CleanupResult(baseline=dict(baseline))
    started = clock()
    streak = 0
    while True:
        try:
            result.last = dict(await read())
        except Exception as exc:  # the app's metrics page: count it, keep trying
            result.error = f"{type(exc).__name__}: {exc}"
        else:
            result.error = ""
            at_rest = all(result.last.get(k, math.inf) <= v for k, v in baseline.items())
            streak = streak + 1 if at_rest else 0
            if streak >= settle_readings:
                result.seconds = clock() - started
                return result
        if clock() - started >= timeout_s:
            return result
        await asyncio.sleep(interval_s)  # a polling interval, bounded by the deadline above
