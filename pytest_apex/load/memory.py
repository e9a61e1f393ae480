"""Memory of the app's processes through a run, and the gates on it.

Two ways to read a service's memory, one `MemorySource` each:

* `ContainerMemory`: a container's memory as ``docker stats`` shows it (the cgroup's usage
  less its inactive file cache, which the kernel reclaims at will), for a target with
  container access (compose);
* `MetricMemory`: a gauge of resident bytes on the service's Prometheus page (by default
  ``process_resident_memory_bytes``, which every prometheus_client process exports), for a
  deployed target with no container access.

`MemorySampler` reads every source on a fixed grid beside the load; `memory_checks` judges
each service's series after its warm-up: the report's variance (standard deviation over
mean) and the least-squares growth (`pytest_apex.load.trend`), which is what catches a leak.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import httpx
from prometheus_client.parser import text_string_to_metric_families

from pytest_apex.load.periodic import Clock, Periodic
from pytest_apex.load.trend import MIN_POINTS, after_warmup, fit
from pytest_apex.recording import Check

KB: Final = 1024
DEFAULT_SERIES: Final = "process_resident_memory_bytes"
READ_TIMEOUT_S: Final = 5.0
STALE_S: Final = 5.0  # Docker measures every second: five without one is a stall
FIRST_S: Final = 5.0  # how long the first read waits for Docker's first measurement


class MemoryUnreadable(RuntimeError):
    """A source could not be read this once (the sample is skipped and counted)."""


class MemorySource(Protocol):
    """The memory of one service now, in bytes."""

    def read(self) -> float: ...


class ContainerStats(Protocol):
    """Docker's stats of one container (docker-py's ``APIClient.stats``)."""

    def stats(
        self,
        container: str,
        decode: bool | None = None,
        stream: bool = True,
        one_shot: bool | None = None,
    ) -> Any: ...


class ContainerMemory:
    """A container's memory use as ``docker stats`` reports it.

    Docker measures a container once a second, and a one-shot request made between two
    measurements waits for the next one: sampling two containers that way takes two
    seconds a round. So, as ``docker stats`` does, one thread per container follows
    Docker's stream of measurements and `read` returns the latest at once; one older than
    `stale_s` (a stopped container, a stalled daemon) is unreadable, not a flat line.
    """

    def __init__(
        self,
        api: ContainerStats,
        container_id: str,
        *,
        stale_s: float = STALE_S,
        clock: Clock = time.monotonic,
    ) -> None:
        self._api = api
        self.container_id = container_id
        self._stale_s = stale_s
        self._clock = clock
        self._lock = threading.Lock()
        self._first = threading.Event()
        self._latest: tuple[float, float] | None = None  # (when, bytes)
        self._error = ""
        self._thread: threading.Thread | None = None

    def read(self) -> float:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._follow, name=f"apex-stats-{self.container_id[:12]}", daemon=True
            )
            self._thread.start()
        self._first.wait(FIRST_S)
        with self._lock:
            latest, error = self._latest, self._error
        name = self.container_id[:12]
        if latest is None:
            raise MemoryUnreadable(f"docker stats {name}: {error or 'no measurement yet'}")
        age = self._clock() - latest[0]
        if age > self._stale_s:
            why = f" ({error})" if error else ""
            raise MemoryUnreadable(f"docker stats {name}: no measurement for {age:.0f} s{why}")
        return latest[1]

    def _follow(self) -> None:
        try:
            for data in self._api.stats(self.container_id, decode=True, stream=True):
                try:
                    value = _in_use(data)
                except MemoryUnreadable as exc:
                    with self._lock:
                        self._error = str(exc)
                    continue
                with self._lock:
                    self._latest = (self._clock(), value)
                    self._error = ""
                self._first.set()
        except Exception as exc:  # docker-py's APIError, requests' errors, a closed client
            with self._lock:
                self._error = f"{type(exc).__name__}: {exc}"
        finally:
            self._first.set()


def _in_use(data: Mapping[str, Any]) -> float:
    """The cgroup's usage less its inactive file cache, which the kernel reclaims at will
    (cgroup v1 says total_inactive_file, v2 inactive_file; docker stats subtracts it)."""
    memory = data.get("memory_stats") or {}
    if "usage" not in memory:
        raise MemoryUnreadable("the container reports no memory use (is it running?)")
    usage = float(memory["usage"])
    extra = memory.get("stats") or {}
    cache = float(extra.get("total_inactive_file", extra.get("inactive_file", 0)))
    return usage - cache if cache < usage else usage


@dataclass(frozen=True)
class MetricMemory:
    """A resident-bytes gauge on a service's Prometheus page (all its samples added up)."""

    client: httpx.Client
    url: str
    series: str = DEFAULT_SERIES

    def read(self) -> float:
        try:
            response = self.client.get(self.url, timeout=READ_TIMEOUT_S)
            response.raise_for_status()
            families = list(text_string_to_metric_families(response.text))
        except (httpx.HTTPError, ValueError) as exc:
            raise MemoryUnreadable(f"{self.url}: {exc}") from exc
        values = [
            float(sample.value)
            for family in families
            for sample in family.samples
            if sample.name == self.series
        ]
        if not values:
            raise MemoryUnreadable(f"{self.url} has no {self.series} sample")
        return sum(values)


@dataclass
class MemorySeries:
    """One service's samples: (seconds since the sampler started, bytes)."""

    service: str
    samples: list[tuple[float, float]] = field(default_factory=list)
    unreadable: int = 0
    last_error: str = ""


class MemorySampler(Periodic):
    """Reads every source every `interval_s` while the `with` block runs, at most `max_s`."""

    def __init__(
        self,
        sources: Mapping[str, MemorySource],
        interval_s: float,
        max_s: float,
        *,
        clock: Clock = time.monotonic,
    ) -> None:
        self._sources = dict(sources)
        self._lock = threading.Lock()
        self.series = {name: MemorySeries(name) for name in self._sources}
        super().__init__("memory", self._sample_all, interval_s, max_s, clock=clock)

    def _sample_all(self, at_s: float) -> None:
        for name, source in self._sources.items():
            try:
                value = source.read()
            except MemoryUnreadable as exc:
                with self._lock:
                    self.series[name].unreadable += 1
                    self.series[name].last_error = str(exc)
                continue
            with self._lock:
                self.series[name].samples.append((at_s, value))

    def plain(self) -> dict[str, list[tuple[float, float]]]:
        """service -> samples, for charts and reports."""
        with self._lock:
            return {name: list(s.samples) for name, s in self.series.items()}


@dataclass(frozen=True)
class MemoryGates:
    """What the memory of a run is judged by (names as the thresholds catalogue has them)."""

    variance_max: float  # memory_variance_max: standard deviation / mean
    slope_kb_per_h_max: float  # memory_slope_kb_per_h_max
    warmup_s: float  # memory_warmup_s: samples before this are not judged
    r2_min: float = 0.5  # how well a line must fit before growth is called a leak


def memory_checks(
    series: Sequence[MemorySeries],
    gates: MemoryGates,
    *,
    missing: Sequence[str] = (),
    error: BaseException | None = None,
) -> list[Check]:
    """Per service: ``memory_variance <service>`` and ``memory_slope <service>`` (KB/h).

    `missing`: services that had no memory source; with no series at all, one inconclusive
    check says what to give (a leak gate that could not look is not a pass).
    """
    if not series:
        why = "no memory source for any service"
        if missing:
            why += f" ({', '.join(missing)})"
        why += (
            ": run against a compose target, or name a resident-memory gauge in the service's"
            " `metrics.memory` in the app description"
        )
        return [
            Check(
                "memory_slope", math.nan, gates.slope_kb_per_h_max, "<=", "KB/h", inconclusive=why
            )
        ]
    broken = f"the memory sampler stopped: {error!r}" if error is not None else ""
    checks: list[Check] = []
    for one in series:
        checks.extend(_service_checks(one, gates, broken))
    return checks


def _service_checks(one: MemorySeries, gates: MemoryGates, broken: str) -> list[Check]:
    judged = after_warmup(one.samples, gates.warmup_s)
    trend = fit(judged)
    limit_per_s = gates.slope_kb_per_h_max * KB / 3600
    reading = trend.reading(limit_per_s, r2_min=gates.r2_min)
    slope_kb_h = trend.slope / KB * 3600
    low, high = (trend.slope_low / KB * 3600, trend.slope_high / KB * 3600)
    shape = (
        f"{trend.points} samples over {trend.span_s:.0f} s after a {gates.warmup_s:g} s warm-up,"
        f" mean {_mib(trend.mean)}"
    )
    if one.unreadable:
        shape += f"; {one.unreadable} reads failed ({one.last_error})"
    fitted = f"growth {slope_kb_h:,.0f} KB/h (95 % CI {low:,.0f} to {high:,.0f}), r² {trend.r2:.2f}"
    inconclusive = broken
    if not inconclusive and reading == "unclear" and trend.points >= MIN_POINTS:
        inconclusive = (
            f"{fitted}: memory moves but not along a line (a sawtooth?), judge it by hand"
            if trend.slope_low > limit_per_s
            else f"{fitted}: the interval straddles the limit; a longer run would tell"
        )
    # A leak is judged on the interval, not the point estimate: the observed value is the
    # bound that decides (the upper one when it passes, the lower one when it fails).
    observed = high if reading == "flat" or reading == "unclear" else low
    return [
        Check(
            f"memory_variance {one.service}",
            trend.relative_sd,
            gates.variance_max,
            "<",
            detail=shape,
            samples=trend.points,
            min_samples=MIN_POINTS,
            inconclusive=broken,
        ),
        Check(
            f"memory_slope {one.service}",
            observed,
            gates.slope_kb_per_h_max,
            "<=",
            "KB/h",
            detail=shape if inconclusive else f"{fitted}; {shape}",
            samples=trend.points,
            min_samples=MIN_POINTS,
            inconclusive=inconclusive,
        ),
    ]


def _mib(value: float) -> str:
    return "?" if math.isnan(value) else f"{value / KB / KB:.1f} MiB"
