"""Measurements that stay exact and small however long a run lasts.

Latencies go into HdrHistograms (`hdrh`), never sample lists: memory is bounded by the
histogram size, not by the run's length (k6 keeps every Trend sample and grew to tens of GB
on long runs). Precision is 3 significant digits, so a p95 near a 2 s threshold is off by at
most 0.1 % (Locust rounds to 2 digits: ±2.5 % right at the threshold).

Unit: **microseconds**, integers from 1 µs to 1 h. Milliseconds would round every loopback
request (tens of µs) to 0 or 1; an hour is longer than any request timeout.

Kept per operation, per stage and per time window (default 10 s), so a threshold can be
judged in every window and not only over the stage. A closed window is kept encoded (a few
hundred bytes) rather than as a live histogram (about 170 KB of counters). Histograms from
several processes merge exactly with `encode()` / `decode_and_add`.

The hot path does not call `HdrHistogram.record_value` (about 9 µs a call in pure Python):
`Tally` counts values already rounded down to their histogram bucket in a dict, and flushes
the counts into the histogram when a window closes. The histogram it produces is identical
to recording every value (the bucket floor has the same counts index as the value).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, cast

from hdrh.histogram import HdrHistogram

UNIT: Final = "us"
LOWEST_US: Final = 1
HIGHEST_US: Final = 3_600_000_000  # one hour
SIGNIFICANT_DIGITS: Final = 3
DEFAULT_WINDOW_S: Final = 10.0

# With 3 significant digits HdrHistogram keeps 2**11 sub-buckets: values below 2**11 are
# exact, a value of bit length b >= 12 shares its bucket with the 2**(b-11) values above its
# floor. Rounding to that floor before counting loses nothing the histogram would keep.
_SUB_BUCKET_BITS: Final = 11

# Error kinds (`error_kind` of an operation); HTTP statuses count by class ("4xx", "5xx").
TIMEOUT: Final = "timeout"
CONNECTION_REFUSED: Final = "connection_refused"
CONNECTION: Final = "connection"  # reset or closed mid-request
PROTOCOL: Final = "protocol"  # an answer that was not valid for the protocol
OTHER: Final = "other"


def status_kind(status: int) -> str:
    """``503 -> "5xx"``: errors count by status class, so a thousand 503s read as one kind."""
    return f"{status // 100}xx"


def new_histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)


def to_us(seconds: float) -> int:
    """Seconds as whole microseconds within the histogram's range (clamped, never dropped)."""
    return min(HIGHEST_US, max(LOWEST_US, round(seconds * 1_000_000)))


def bucket_floor(us: int) -> int:
    """The lowest value sharing `us`'s histogram bucket."""
    shift = us.bit_length() - _SUB_BUCKET_BITS
    return us if shift <= 0 else (us >> shift) << shift


class Tally:
    """Counts of bucket-rounded values: the fast front of a histogram (see module doc)."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.total = 0

    def add(self, us: int) -> None:
        shift = us.bit_length() - _SUB_BUCKET_BITS
        key = us if shift <= 0 else (us >> shift) << shift
        self.counts[key] = self.counts.get(key, 0) + 1
        self.total += 1

    def into(self, *histograms: HdrHistogram) -> None:
        for value, count in self.counts.items():
            for histogram in histograms:
                histogram.record_value(value, count)


@dataclass(frozen=True)
class Summary:
    """A histogram read back in seconds (NaN when nothing was recorded)."""

    count: int
    p50_s: float
    p90_s: float
    p95_s: float
    p99_s: float
    max_s: float
    mean_s: float

    def percentile_s(self, percentile: float) -> float:
        return {50: self.p50_s, 90: self.p90_s, 95: self.p95_s, 99: self.p99_s}[int(percentile)]


def summarize(histogram: HdrHistogram) -> Summary:
    count = histogram.get_total_count()
    if count == 0:
        return Summary(0, *([math.nan] * 6))

    def at(p: float) -> float:
        return cast(int, histogram.get_value_at_percentile(p)) / 1_000_000

    return Summary(
        count=count,
        p50_s=at(50),
        p90_s=at(90),
        p95_s=at(95),
        p99_s=at(99),
        max_s=histogram.get_max_value() / 1_000_000,
        mean_s=histogram.get_mean_value() / 1_000_000,
    )


def percentile_s(histogram: HdrHistogram, percentile: float) -> float:
    if histogram.get_total_count() == 0:
        return math.nan
    return cast(int, histogram.get_value_at_percentile(percentile)) / 1_000_000


def decode(blob: bytes | str) -> HdrHistogram:
    histogram = new_histogram()
    histogram.decode_and_add(blob.encode("ascii") if isinstance(blob, str) else blob)
    return histogram


@dataclass
class WindowOp:
    """One operation in one time window: its latencies (encoded) and errors."""

    blob: bytes
    count: int
    errors: Counter[str] = field(default_factory=Counter)

    def histogram(self) -> HdrHistogram:
        return decode(self.blob)

    def add(self, other: WindowOp) -> None:
        merged = self.histogram()
        merged.decode_and_add(other.blob)
        self.blob = merged.encode()
        self.count += other.count
        self.errors.update(other.errors)


@dataclass
class OpMeasurements:
    """One operation over one stage.

    `latency`: successful operations, from the intended start in the open model (from the
    actual start in the closed model, where the two are the same). `service`: from the actual
    start, kept only in the open model; the gap between the two is what a stalled server or a
    late generator cost. Failed operations are counted in `errors` by kind, not timed: a fast
    500 must not improve the p95.
    """

    latency: HdrHistogram = field(default_factory=new_histogram)
    service: HdrHistogram | None = None
    errors: Counter[str] = field(default_factory=Counter)
    windows: dict[int, WindowOp] = field(default_factory=dict)

    @property
    def ok(self) -> int:
        return cast(int, self.latency.get_total_count())

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def count(self) -> int:
        return self.ok + self.error_count

    def encode(self) -> dict[str, Any]:
        return {
            "latency": self.latency.encode().decode("ascii"),
            "service": None if self.service is None else self.service.encode().decode("ascii"),
            "errors": dict(self.errors),
            "windows": {
                str(index): {
                    "latency": window.blob.decode("ascii"),
                    "count": window.count,
                    "errors": dict(window.errors),
                }
                for index, window in self.windows.items()
            },
        }

    def add_encoded(self, data: Mapping[str, Any]) -> None:
        """Merge another process's encoded measurements of the same operation, exactly."""
        self.latency.decode_and_add(data["latency"].encode("ascii"))
        if data["service"] is not None:
            if self.service is None:
                self.service = new_histogram()
            self.service.decode_and_add(data["service"].encode("ascii"))
        self.errors.update(data["errors"])
        for key, raw in data["windows"].items():
            window = WindowOp(raw["latency"].encode("ascii"), raw["count"], Counter(raw["errors"]))
            index = int(key)
            if index in self.windows:
                self.windows[index].add(window)
            else:
                self.windows[index] = window


class _OpenWindow:
    __slots__ = ("errors", "latency", "service")

    def __init__(self) -> None:
        self.latency = Tally()
        self.service = Tally()
        self.errors: Counter[str] = Counter()


class OpRecorder:
    """Records one operation during one stage; `finish()` gives its `OpMeasurements`.

    A window stays open until a record lands two windows later, so operations that straddle a
    window boundary still land in the window they started in; a later straggler reopens it.
    """

    def __init__(self, window_s: float) -> None:
        self._window_s = window_s
        self._open: dict[int, _OpenWindow] = {}
        self._newest = 0
        self.result = OpMeasurements()

    def record(
        self, at_s: float, latency_s: float, service_s: float | None, error: str | None
    ) -> None:
        """`at_s`: when the operation started (intended), seconds since the stage started."""
        index = max(0, int(at_s // self._window_s))
        window = self._open.get(index)
        if window is None:
            window = self._open[index] = _OpenWindow()
            if index > self._newest:
                self._newest = index
                self._flush(lambda i: i < index - 1)
        if error is not None:
            window.errors[error] += 1
            return
        window.latency.add(to_us(latency_s))
        if service_s is not None:
            window.service.add(to_us(service_s))

    def live(self) -> HdrHistogram:
        """The stage so far, for progress lines (a copy: costs a few ms, so not per request)."""
        histogram = new_histogram()
        histogram.add(self.result.latency)
        for window in self._open.values():
            window.latency.into(histogram)
        return histogram

    def live_errors(self) -> int:
        return self.result.error_count + sum(sum(w.errors.values()) for w in self._open.values())

    def live_count(self) -> int:
        return self.result.count + sum(
            w.latency.total + sum(w.errors.values()) for w in self._open.values()
        )

    def finish(self) -> OpMeasurements:
        self._flush(lambda _: True)
        return self.result

    def _flush(self, which: Any) -> None:
        result = self.result
        for index in [i for i in self._open if which(i)]:
            window = self._open.pop(index)
            histogram = new_histogram()
            window.latency.into(histogram, result.latency)
            if window.service.total:
                if result.service is None:
                    result.service = new_histogram()
                window.service.into(result.service)
            result.errors.update(window.errors)
            closed = WindowOp(histogram.encode(), window.latency.total, window.errors)
            if index in result.windows:
                result.windows[index].add(closed)
            else:
                result.windows[index] = closed


class StageRecorder:
    """Every operation of one stage, by name."""

    def __init__(self, window_s: float = DEFAULT_WINDOW_S) -> None:
        if not window_s > 0:
            raise ValueError(f"window_s must be > 0, got {window_s}")
        self.window_s = window_s
        self.ops: dict[str, OpRecorder] = {}

    def record(
        self,
        op: str,
        at_s: float,
        latency_s: float,
        service_s: float | None = None,
        error: str | None = None,
    ) -> None:
        recorder = self.ops.get(op)
        if recorder is None:
            recorder = self.ops[op] = OpRecorder(self.window_s)
        recorder.record(at_s, latency_s, service_s, error)

    def live(self, *, exclude: Collection[str] = ()) -> tuple[int, int, float]:
        """(operations, errors, p95 in s) so far: counts over every operation, the p95 over
        those not in `exclude`."""
        histogram = new_histogram()
        for name, recorder in self.ops.items():
            if name not in exclude:
                histogram.add(recorder.live())
        count = sum(r.live_count() for r in self.ops.values())
        errors = sum(r.live_errors() for r in self.ops.values())
        return count, errors, percentile_s(histogram, 95)

    def finish(self) -> dict[str, OpMeasurements]:
        return {name: recorder.finish() for name, recorder in self.ops.items()}


def merged_latency(ops: Iterable[OpMeasurements]) -> HdrHistogram:
    """All operations' latencies in one histogram."""
    histogram = new_histogram()
    for op in ops:
        histogram.add(op.latency)
    return histogram
