"""Stage plans: what load to apply, when, and for how long.

Two models, because they answer different questions:

* **closed** (`ClosedStage`): a number of virtual users, each running its session in a loop
  with think time. How many users can the app serve? Its latency hides server stalls (a user
  stuck on a slow reply sends nothing else), which is why the open model exists.
* **open** (`OpenStage`): sessions start at a constant arrival rate whatever the app does,
  scheduled ahead, so a stalled server shows as latency measured from each session's
  *intended* start (wrk2's answer to coordinated omission). A start that cannot be made on
  time (every in-flight slot taken) is counted as dropped, never silently skipped.

Every stage has a duration and a hard cap on operations, so no stage can run away.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Final

# No stage may start more operations than this unless it says otherwise: a typo in a rate
# (10,000/s instead of 100/s) must not turn a 20 s stage into a flood of the target.
DEFAULT_MAX_REQUESTS: Final = 1_000_000


@dataclass(frozen=True)
class ClosedStage:
    """`users` virtual users for `duration_s`, started evenly over the first `ramp_s`."""

    users: int
    duration_s: float
    ramp_s: float = 0.0
    max_requests: int = DEFAULT_MAX_REQUESTS

    def __post_init__(self) -> None:
        _check_common(self.duration_s, self.max_requests)
        if self.users < 0:
            raise ValueError(f"a closed stage needs users >= 0, got {self.users}")
        if not 0 <= self.ramp_s <= self.duration_s:
            raise ValueError(f"ramp_s must be within 0..duration_s, got {self.ramp_s}")

    @property
    def peak_users(self) -> int:
        return self.users

    @property
    def target(self) -> int:
        """The users this stage must reach for its results to count."""
        return self.users

    def start_offsets(self) -> list[float]:
        """When each user starts, in seconds after the stage starts (evenly over the ramp)."""
        if self.users == 0:
            return []
        step = self.ramp_s / self.users
        return [i * step for i in range(self.users)]

    def share(self, worker: int, workers: int) -> ClosedStage:
        """This worker's part of the stage: its users and its part of the request cap."""
        return replace(
            self,
            users=_share(self.users, worker, workers),
            max_requests=max(1, _share(self.max_requests, worker, workers)),
        )

    def describe(self) -> str:
        return f"{self.users} users"


@dataclass(frozen=True)
class OpenStage:
    """Sessions started at `rate` per second for `duration_s`.

    `max_concurrency` bounds the sessions in flight (k6's preallocated VUs): an arrival that
    finds every slot taken is dropped and counted. It also bounds open files, so it is this
    stage's peak number of users.
    """

    rate: float
    duration_s: float
    max_concurrency: int = 1000
    max_requests: int = DEFAULT_MAX_REQUESTS

    def __post_init__(self) -> None:
        _check_common(self.duration_s, self.max_requests)
        if not (math.isfinite(self.rate) and self.rate > 0):
            raise ValueError(f"an open stage needs a rate > 0 sessions/s, got {self.rate}")
        if self.max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {self.max_concurrency}")

    @property
    def peak_users(self) -> int:
        return self.max_concurrency

    @property
    def target(self) -> int:
        """The sessions this stage schedules over its full duration."""
        return sum(1 for _ in self.arrivals(0.0))

    def arrivals(self, start: float) -> Iterator[float]:
        """The intended start time of every session, on the clock `start` is read from.

        Times are computed from the stage start (``start + i / rate``), never from the
        previous arrival, so a late loop cannot drift the schedule: lateness shows as latency.
        """
        interval = 1.0 / self.rate
        i = 0
        while (offset := i * interval) < self.duration_s:
            yield start + offset
            i += 1

    def share(self, worker: int, workers: int) -> OpenStage:
        """This worker's part: rate / workers, and its share of slots and of the cap."""
        return replace(
            self,
            rate=self.rate / workers,
            max_concurrency=max(1, _share(self.max_concurrency, worker, workers)),
            max_requests=max(1, _share(self.max_requests, worker, workers)),
        )

    def describe(self) -> str:
        return f"{self.rate:g} sessions/s"


Stage = ClosedStage | OpenStage


def closed_plan(
    stages: Iterable[tuple[int, float, float]], *, max_requests: int = DEFAULT_MAX_REQUESTS
) -> tuple[ClosedStage, ...]:
    """``[(users, duration_s, ramp_s), ...]`` as closed stages, e.g. the report's
    ``[(10, 20, 2), (25, 20, 2), (50, 20, 5), (100, 20, 5), (150, 20, 5)]``."""
    return tuple(
        ClosedStage(users, duration, ramp, max_requests) for users, duration, ramp in stages
    )


def open_plan(
    rates: Iterable[float],
    duration_s: float,
    *,
    max_concurrency: int = 1000,
    max_requests: int = DEFAULT_MAX_REQUESTS,
) -> tuple[OpenStage, ...]:
    """One open stage per arrival rate, each `duration_s` long."""
    return tuple(OpenStage(rate, duration_s, max_concurrency, max_requests) for rate in rates)


def peak_users(plan: Iterable[Stage]) -> int:
    """The most concurrent users (or in-flight sessions) any stage of the plan asks for."""
    return max((stage.peak_users for stage in plan), default=0)


def _share(total: int, worker: int, workers: int) -> int:
    if not 0 <= worker < workers:
        raise ValueError(f"worker {worker} is outside 0..{workers - 1}")
    return total // workers + (1 if worker < total % workers else 0)


def _check_common(duration_s: float, max_requests: int) -> None:
    if not (math.isfinite(duration_s) and duration_s > 0):
        raise ValueError(f"a stage needs a finite duration > 0 s, got {duration_s}")
    if max_requests < 1:
        raise ValueError(f"a stage needs max_requests >= 1, got {max_requests}")
