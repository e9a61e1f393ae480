"""Measurements: exact histograms, windows, merges across processes, bounded memory."""

from __future__ import annotations

import random

import pytest

from pytest_apex.load.measure import (
    HIGHEST_US,
    OpMeasurements,
    StageRecorder,
    Tally,
    bucket_floor,
    new_histogram,
    status_kind,
    to_us,
)


def _counts(histogram) -> list[tuple[int, int]]:
    return [
        (v.value_iterated_to, v.count_at_value_iterated_to)
        for v in histogram.get_recorded_iterator()
    ]


def test_tally_gives_the_same_histogram_as_recording_every_value() -> None:
    rng = random.Random(7)
    values = [int(rng.lognormvariate(8, 2)) + 1 for _ in range(20_000)]
    values = [min(v, HIGHEST_US) for v in values]
    direct = new_histogram()
    for value in values:
        direct.record_value(value)
    tally = Tally()
    for value in values:
        tally.add(value)
    via_tally = new_histogram()
    tally.into(via_tally)
    assert _counts(via_tally) == _counts(direct)
    for p in (50, 95, 99, 99.9):
        assert via_tally.get_value_at_percentile(p) == direct.get_value_at_percentile(p)
    assert via_tally.get_max_value() == direct.get_max_value()


def test_bucket_floor_keeps_three_significant_digits() -> None:
    assert bucket_floor(2047) == 2047  # below 2**11: exact
    assert bucket_floor(1_234_567) <= 1_234_567
    assert (1_234_567 - bucket_floor(1_234_567)) / 1_234_567 < 0.001


def test_units_are_clamped_microseconds() -> None:
    assert to_us(0.0015) == 1500
    assert to_us(0) == 1
    assert to_us(1e9) == HIGHEST_US
    assert status_kind(503) == "5xx"


def test_two_workers_merge_into_the_histogram_of_all_values() -> None:
    rng = random.Random(3)
    values = [(rng.uniform(0, 30), rng.lognormvariate(-4, 1.5)) for _ in range(5000)]
    whole, a, b = StageRecorder(10), StageRecorder(10), StageRecorder(10)
    for i, (at, latency) in enumerate(values):
        whole.record("get", at, latency)
        (a if i % 2 else b).record("get", at, latency)
        if i % 97 == 0:
            whole.record("get", at, 0, error="5xx")
            (a if i % 2 else b).record("get", at, 0, error="5xx")
    merged = OpMeasurements()
    merged.add_encoded(a.finish()["get"].encode())
    merged.add_encoded(b.finish()["get"].encode())
    expected = whole.finish()["get"]
    assert _counts(merged.latency) == _counts(expected.latency)
    assert merged.errors == expected.errors
    assert sorted(merged.windows) == sorted(expected.windows) == [0, 1, 2]
    for index, window in expected.windows.items():
        assert _counts(merged.windows[index].histogram()) == _counts(window.histogram())
        assert merged.windows[index].errors == window.errors
    # One worker's half alone is *not* the whole: the comparison can fail.
    alone = OpMeasurements()
    alone.add_encoded(a.finish()["get"].encode())
    assert _counts(alone.latency) != _counts(expected.latency)


def test_operations_land_in_the_window_they_started_in_even_when_late() -> None:
    recorder = StageRecorder(window_s=1.0)
    recorder.record("op", 0.5, 0.010)
    recorder.record("op", 5.5, 0.010)  # closes window 0
    recorder.record("op", 0.9, 2.0)  # a straggler started in window 0, finished much later
    result = recorder.finish()["op"]
    assert result.windows[0].count == 2
    assert result.windows[0].histogram().get_max_value() >= 1_999_000
    assert result.latency.get_total_count() == 3


def test_memory_stays_bounded_over_many_windows() -> None:
    # An hour of 10 s windows at 50 req/s: at most two windows stay open as histograms-to-be,
    # closed ones are small encoded blobs.
    recorder = StageRecorder(window_s=10)
    rng = random.Random(1)
    for second in range(3600):
        for _ in range(50):
            recorder.record("op", second + rng.random(), rng.uniform(0.001, 0.5))
        assert len(recorder.ops["op"]._open) <= 2
    result = recorder.finish()["op"]
    assert len(result.windows) == 360
    assert max(len(w.blob) for w in result.windows.values()) < 4096
    assert result.latency.get_total_count() == 3600 * 50


def test_errors_are_not_timed() -> None:
    recorder = StageRecorder()
    recorder.record("op", 0.1, 0.2)
    recorder.record("op", 0.1, 0.0001, error="5xx")
    op = recorder.finish()["op"]
    assert (op.ok, op.error_count, op.count) == (1, 1, 2)
    assert op.latency.get_min_value() >= 199_000


def test_window_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="window_s"):
        StageRecorder(0)


def test_the_live_p95_leaves_out_the_ops_it_is_told_to_but_counts_them() -> None:
    recorder = StageRecorder(window_s=10.0)
    for i in range(100):
        recorder.record("list", i * 0.01, 0.005)
        recorder.record("agent_final_event", i * 0.01, 0.9)
    count, errors, p95 = recorder.live(exclude=("agent_final_event",))
    assert (count, errors) == (200, 0)
    assert p95 == pytest.approx(0.005, rel=0.01)
    assert recorder.live()[2] == pytest.approx(0.9, rel=0.01)
