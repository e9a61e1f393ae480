"""What the load and soak suites watch beside the load: availability and memory.

The prober and the sampler run in threads for the whole `with` block (the load, and for a
soak the pauses between loads too), bounded by the run's planned seconds plus a margin, and
their findings become checks: availability per service, and for a soak the memory gates.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Final

from pytest_apex.load.availability import AvailabilityProber, HealthCheck, availability_checks
from pytest_apex.load.memory import MemoryGates, MemorySampler, memory_checks
from pytest_apex.recording import Check
from pytest_apex.settings import Thresholds
from pytest_apex.suites.load_fixtures import MemoryWatch

# Past the plan's own seconds: the engine's drain, a slow stop, the workers' start.
MARGIN_S: Final = 300.0
PROBE_SPARE: Final = 1.25
MIN_PROBE_S: Final = 0.02


@dataclass
class Watch:
    """The prober and the sampler of one run, and what they saw as checks."""

    prober: AvailabilityProber
    sampler: MemorySampler
    memory: MemoryWatch

    def availability(self, thresholds: Thresholds) -> list[Check]:
        services = list(self.prober.services.values())
        return availability_checks(
            services, thresholds.number("availability_min"), error=self.prober.error
        )

    def memory_gates(self, thresholds: Thresholds) -> list[Check]:
        gates = MemoryGates(
            variance_max=thresholds.number("memory_variance_max"),
            slope_kb_per_h_max=thresholds.number("memory_slope_kb_per_h_max"),
            warmup_s=thresholds.seconds("memory_warmup_s"),
        )
        return memory_checks(
            list(self.sampler.series.values()),
            gates,
            missing=self.memory.missing,
            error=self.sampler.error,
        )

    def memory_samples(self) -> dict[str, list[tuple[float, float]]]:
        return self.sampler.plain()


def probe_interval(thresholds: Thresholds, planned_s: float) -> float:
    """`availability_probe_s`, or shorter when the plan is too short to collect the probes
    `availability_min` needs (> 99.9 %: 1,000) at that pace, with a quarter to spare; never
    below `MIN_PROBE_S`, so a short run gets an inconclusive availability, not a flood."""
    minimum = thresholds.number("availability_min")
    needed = 1 / (1 - minimum) if minimum < 1 else 1.0
    paced = planned_s / (needed * PROBE_SPARE) if planned_s > 0 else MIN_PROBE_S
    return max(MIN_PROBE_S, min(thresholds.seconds("availability_probe_s"), paced))


@contextmanager
def watching(
    checks: Mapping[str, HealthCheck],
    memory: MemoryWatch,
    thresholds: Thresholds,
    planned_s: float,
) -> Iterator[Watch]:
    """Probe and sample from entry to exit, at most `planned_s` + `MARGIN_S` seconds."""
    bound = planned_s + MARGIN_S
    interval = probe_interval(thresholds, planned_s)
    prober = AvailabilityProber(checks, interval, bound)
    sampler = MemorySampler(memory.sources, thresholds.seconds("memory_sample_s"), bound)
    with ExitStack() as stack:
        stack.enter_context(prober)
        stack.enter_context(sampler)
        yield Watch(prober, sampler, memory)
