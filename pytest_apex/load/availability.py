"""Availability through a run: every service's health, probed on a fixed grid beside the load.

A service is available at a probe when its health check says so within the probe's timeout;
availability is the share of probes it passed. The report's "> 99.9 %" needs 1,000 probes
before one failure is even visible, so fewer is inconclusive (the probe interval is a
threshold: `availability_probe_s`). Outages are kept as spans, with the first reason seen, so
a failure says when and why, not just how much.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

from pytest_apex.load.periodic import Clock, Periodic
from pytest_apex.recording import Check

EXAMPLES: Final = 3


class HealthCheck(Protocol):
    """One probe of one service: "" when it is healthy, else why not (a status, an error)."""

    def __call__(self) -> str: ...


@dataclass
class Outage:
    """Consecutive failed probes: from the first failure to the next success (or the end)."""

    start_s: float
    end_s: float
    reason: str
    probes: int = 1


@dataclass
class ServiceAvailability:
    """What the probes of one service saw."""

    service: str
    probes: int = 0
    healthy: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    outages: list[Outage] = field(default_factory=list)
    _open: Outage | None = None

    @property
    def ratio(self) -> float:
        return self.healthy / self.probes if self.probes else math.nan

    def record(self, at_s: float, reason: str) -> None:
        self.probes += 1
        if not reason:
            self.healthy += 1
            self._open = None
            return
        self.reasons[reason] += 1
        if self._open is None:
            self._open = Outage(at_s, at_s, reason)
            self.outages.append(self._open)
        else:
            self._open.end_s = at_s
            self._open.probes += 1

    def describe(self) -> str:
        """``2 outages, the longest 3.0 s from 41.2 s (503 from /health/ready)``."""
        if not self.outages:
            return ""
        longest = max(self.outages, key=lambda o: (o.end_s - o.start_s, o.probes))
        reasons = ", ".join(f"{r} x{n}" for r, n in self.reasons.most_common(EXAMPLES))
        plural = "s" if len(self.outages) != 1 else ""
        return (
            f"{len(self.outages)} outage{plural}, the longest {longest.probes} probes "
            f"({longest.end_s - longest.start_s:.1f} s) from {longest.start_s:.1f} s into "
            f"the run: {reasons}"
        )


class AvailabilityProber(Periodic):
    """Probes every service every `interval_s` while the `with` block runs (in a thread),
    at most `max_s` seconds. One service's slow probe delays the others' by its timeout at
    most: probes are short GETs with their own timeout."""

    def __init__(
        self,
        checks: Mapping[str, HealthCheck],
        interval_s: float,
        max_s: float,
        *,
        clock: Clock = time.monotonic,
    ) -> None:
        self._checks = dict(checks)
        self._lock = threading.Lock()
        self.services = {name: ServiceAvailability(name) for name in self._checks}
        super().__init__("availability", self._probe_all, interval_s, max_s, clock=clock)

    def _probe_all(self, at_s: float) -> None:
        for name, check in self._checks.items():
            reason = check()
            with self._lock:
                self.services[name].record(at_s, reason)


def availability_checks(
    services: Sequence[ServiceAvailability], minimum: float, *, error: BaseException | None
) -> list[Check]:
    """One ``availability`` check per service: the share of healthy probes > `minimum`."""
    needed = math.ceil(1 / (1 - minimum) - 1e-9) if minimum < 1 else 1
    broken = f"the prober stopped: {error!r}" if error is not None else ""
    if not services:
        return [
            Check(
                "availability",
                math.nan,
                minimum,
                ">",
                inconclusive="no service has a health route to probe (liveness or readiness)",
            )
        ]
    return [
        Check(
            f"availability {s.service}",
            s.ratio,
            minimum,
            ">",
            detail=s.describe() or f"{s.healthy}/{s.probes} probes healthy",
            samples=s.probes,
            min_samples=needed,
            inconclusive=broken,
        )
        for s in services
    ]
