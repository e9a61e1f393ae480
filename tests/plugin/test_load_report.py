"""The load report: the per-stage table, its charts, the interval logs, and where they show.

What a chart shows is checked by eye; here: the table's numbers are the stages' own, a PNG is
written for ordinary, empty and single-stage runs, the interval logs read back (with hdrh's
own reader) to the histograms they came from, attachments are made only when Allure records,
and the terminal summary prints the stage table of a real (fake-app) load run.
"""

from __future__ import annotations

import json
import math
import struct
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hdrh.log import HistogramLogReader

from pytest_apex.load.generator import GeneratorHealth
from pytest_apex.load.measure import StageRecorder, new_histogram
from pytest_apex.load.result import PlanResult, StageResult
from pytest_apex.reporting import load_report
from pytest_apex.reporting.load_report import (
    latency_by_stage,
    memory_over_time,
    over_time,
    rows_from_properties,
    stage_table,
    stage_table_html,
    stage_table_text,
    terminal_lines,
    windows,
    write_hlogs,
    write_load_report,
)
from pytest_apex.suites.load_checks import NOT_RESPONSE_TIMES, summary
from tests.plugin.conftest import ApexPytester
from tests.plugin.test_load_suite import SHORT, run_suite

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CALM = GeneratorHealth(cpu_percent=20.0, lag_p99_s=0.002, lag_max_s=0.004, ticks=100)
UNMEASURED = GeneratorHealth(cpu_percent=math.nan, lag_p99_s=math.nan, lag_max_s=math.nan, ticks=0)


def _stage(
    recorder: StageRecorder,
    index: int = 1,
    *,
    count: int = 3,
    users: int = 10,
    elapsed_s: float = 20.0,
    health: GeneratorHealth = CALM,
) -> StageResult:
    return StageResult(
        index=index,
        count=count,
        model="closed",
        description=f"{users} users",
        target=users,
        reached=users,
        duration_s=elapsed_s,
        elapsed_s=elapsed_s,
        window_s=recorder.window_s,
        health=health,
        ops=recorder.finish(),
        peak_users=users,
    )


def _recorded(
    seconds: float = 20.0, per_s: int = 50, list_s: float = 0.01, post_s: float = 0.04
) -> StageRecorder:
    """`list` and `post` at a steady rate (one post in 20 a 500), and a slow agent milestone."""
    recorder = StageRecorder(window_s=5)
    for i in range(int(seconds * per_s)):
        at = i / per_s
        recorder.record("list", at, list_s)
        recorder.record("post", at, post_s, error="5xx" if i % 20 == 0 else None)
        if i % 10 == 0:
            recorder.record("agent_final_event", at, 1.5)
    return recorder


def _plan() -> list[StageResult]:
    return [
        _stage(_recorded(list_s=0.01, post_s=0.04), 1, users=10),
        _stage(_recorded(per_s=100, list_s=0.02, post_s=0.08), 2, users=25),
        _stage(StageRecorder(window_s=5), 3, users=50, health=UNMEASURED),  # measured nothing
    ]


# --- the table ----------------------------------------------------------------------------------


def test_each_row_holds_its_stages_numbers() -> None:
    first, second, empty = stage_table(_plan(), exclude=NOT_RESPONSE_TIMES)
    # 1,000 list + 1,000 post (50 of them 5xx) + 100 agent milestones over 20 s.
    assert first["stage"] == 1
    assert (first["users"], first["reached"]) == (10, 10)
    assert first["requests"] == 2100
    assert first["requests_per_s"] == 105.0
    assert first["error_rate"] == pytest.approx(50 / 2100, rel=1e-6)
    # HTTP answers only: half are 10 ms, half (less the errors) 40 ms; 1.5 s milestones excluded.
    assert first["p50_s"] == pytest.approx(0.01, rel=0.001)
    assert first["p95_s"] == pytest.approx(0.04, rel=0.001)
    assert first["p99_s"] == pytest.approx(0.04, rel=0.001)
    assert first["max_s"] == pytest.approx(0.04, rel=0.001)
    assert set(first["p95_s_by_op"]) == {"list", "post"}
    assert first["p95_s_by_op"]["list"] == pytest.approx(0.01, rel=0.001)
    assert first["p95_s_by_op"]["post"] == pytest.approx(0.04, rel=0.001)
    assert first["generator_cpu_percent"] == 20.0
    assert second["requests"] == 4200
    assert second["p95_s"] == pytest.approx(0.08, rel=0.001)
    # Nothing measured: None, never NaN (the rows go through JSON) nor 0.
    assert (empty["requests"], empty["requests_per_s"]) == (0, 0.0)  # 0 in 20 s: a rate of 0
    for key in ("error_rate", "p50_s", "p95_s", "p99_s", "max_s"):
        assert empty[key] is None, key
    assert empty["p95_s_by_op"] == {}
    assert empty["generator_cpu_percent"] is None
    json.dumps([first, second, empty], allow_nan=False)


def test_without_exclusions_every_operation_counts() -> None:
    (row,) = stage_table(_plan()[:1])
    assert row["max_s"] == pytest.approx(1.5, rel=0.001)
    assert "agent_final_event" in row["p95_s_by_op"]


def test_the_text_table_lines_up_and_shows_dashes_for_nothing() -> None:
    lines = stage_table_text(stage_table(_plan(), exclude=NOT_RESPONSE_TIMES))
    assert len(lines) == 4
    header = lines[0].split()
    assert header[:5] == ["stage", "users", "requests", "req/s", "errors"]
    assert "list" in header
    assert "post" in header
    assert lines[1].split()[:6] == ["1", "10/10", "2100", "105", "2.38", "%"]
    assert "0.0100" in lines[1]
    assert "0.0400" in lines[1]
    assert lines[3].split()[:6] == ["3", "50/50", "0", "0", "–", "–"]
    assert len({len(line) for line in lines[:3]}) == 1  # numbers right-aligned in columns
    assert stage_table_text([]) == []


def test_the_html_table_is_self_contained_and_escaped() -> None:
    recorder = StageRecorder(window_s=5)
    for i in range(30):
        recorder.record("<script>alert(1)</script>", i * 0.1, 0.005)
    page = stage_table_html(stage_table([_stage(recorder)]), title="a & b")
    assert page.startswith("<!DOCTYPE html>")
    assert "<script>" not in page
    assert "&lt;script&gt;" in page
    assert "a &amp; b" in page
    assert "<style>" in page
    assert "http" not in page  # nothing fetched from anywhere
    assert page.count("<tr>") == 2


def test_summary_keeps_its_keys_and_adds_the_rows() -> None:
    stage = _plan()[0]
    data = summary(stage)
    for key in (
        "stage",
        "users",
        "reached",
        "requests",
        "requests_per_s",
        "errors",
        "p95_s_all_ops",
        "generator_cpu_percent",
        "workers",
    ):
        assert key in data, key
    assert data["errors"] == {"5xx": 50}
    assert data["p95_s_all_ops"] == pytest.approx(0.04, rel=0.001)
    assert data["p50_s"] == pytest.approx(0.01, rel=0.001)
    assert data["max_s"] == pytest.approx(0.04, rel=0.001)  # agent milestones excluded
    by_op = data["p95_s_by_op"]
    assert isinstance(by_op, dict)
    assert set(by_op) == {"list", "post"}


def test_rows_are_read_back_from_the_report_properties() -> None:
    rows = [summary(stage) for stage in _plan()]
    properties: list[Any] = [("other", "x"), ["load", json.dumps(rows)]]  # xdist: lists
    assert rows_from_properties(properties) == json.loads(json.dumps(rows))
    assert rows_from_properties([("other", "x")]) is None
    assert rows_from_properties([("load", "not json")]) is None
    assert rows_from_properties([("load", json.dumps({"a": 1}))]) is None
    lines = terminal_lines([("tests/test_x.py::test_load", rows)])
    assert lines[0] == "load stages of tests/test_x.py::test_load:"
    assert lines[1].split()[:3] == ["stage", "users", "requests"]
    assert len(lines) == 5


# --- charts -------------------------------------------------------------------------------------


def _assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    assert 300 <= width <= 2000, width
    assert 200 <= height <= 2000, height
    assert path.stat().st_size > 5_000


def _errors_only() -> StageResult:
    recorder = StageRecorder(window_s=5)
    for i in range(40):
        recorder.record("post", i * 0.5, 0.1, error="timeout")
    return _stage(recorder, 2)


def _no_windows() -> StageResult:
    stage = _stage(_recorded(seconds=4), 1)
    for op in stage.ops.values():
        op.windows.clear()
    return stage


PLANS = {
    "three-stages": _plan,
    "single-stage": lambda: [_stage(_recorded(), 1, count=1)],
    "nothing-measured": lambda: [_stage(StageRecorder(), 1, count=1, health=UNMEASURED)],
    "errors-only": lambda: [_stage(StageRecorder(window_s=5), 1), _errors_only()],
    "no-windows": lambda: [_no_windows()],
    "no-stage": list,
}


@pytest.mark.parametrize("plan", list(PLANS))
def test_the_charts_are_drawn_for_any_run(tmp_path: Path, plan: str) -> None:
    stages = PLANS[plan]()
    for draw, name in ((latency_by_stage, "latency.png"), (over_time, "time.png")):
        path = tmp_path / "charts" / name  # the directory is created
        assert draw(stages, path, exclude=NOT_RESPONSE_TIMES) == path
        _assert_png(path)


def test_memory_is_drawn_only_when_there_is_some(tmp_path: Path) -> None:
    path = tmp_path / "memory.png"
    assert memory_over_time(None, path) is None
    assert memory_over_time({}, path) is None
    assert memory_over_time({"api": []}, path) is None
    assert not path.exists()
    memory = {
        "api": [(t * 2.0, 80e6 + t * 1e5) for t in range(40)],
        "auth": [(5.0, 40e6)],  # a single sample
        "idle": [],
    }
    assert memory_over_time(memory, path, stages=_plan()) == path
    _assert_png(path)


def test_windows_follow_the_stages_back_to_back() -> None:
    stages = _plan()
    found = windows(stages, exclude=NOT_RESPONSE_TIMES)
    starts = [start for start, *_ in found]
    assert starts == [0.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 35.0]  # stage 2 after 20 s
    _, length, ops, errors, p95 = found[0]
    # 250 list + 250 post (13 of them 5xx: i % 20 == 0 for i < 250) + 25 milestones.
    assert (length, ops, errors) == (5.0, 525, 13)
    assert p95 == pytest.approx(0.04, rel=0.001)


# --- interval logs ------------------------------------------------------------------------------


def _read_log(path: Path) -> list[Any]:
    reader = HistogramLogReader(str(path), new_histogram())
    intervals = []
    while (histogram := reader.get_next_interval_histogram()) is not None:
        intervals.append(histogram)
    reader.close()
    return intervals


def test_the_interval_logs_read_back_to_the_same_histograms(tmp_path: Path) -> None:
    stages = _plan()
    logs = write_hlogs(stages, tmp_path / "logs")
    assert set(logs) == {"list", "post", "agent_final_event"}
    for name, path in logs.items():
        assert path.suffix == ".hlog"
        intervals = _read_log(path)
        assert len(intervals) == 8  # one per 5 s window of two 20 s stages
        assert Counter(h.get_tag() for h in intervals) == {"stage1": 4, "stage2": 4}
        # Stage 2's first window starts when stage 1 ended (20 s into the run).
        starts = [h.get_start_time_stamp() / 1000 for h in intervals]
        assert starts == pytest.approx([0, 5, 10, 15, 20, 25, 30, 35])
        read = new_histogram()
        for histogram in intervals:
            read.add(histogram)
        source = new_histogram()
        for stage in stages:
            if name in stage.ops:
                source.add(stage.ops[name].latency)
        assert read.get_total_count() == source.get_total_count() > 0
        for percentile in (50, 95, 99, 100):
            assert read.get_value_at_percentile(percentile) == source.get_value_at_percentile(
                percentile
            )
        # Per stage too, selected by tag.
        stage2 = new_histogram()
        for histogram in intervals:
            if histogram.get_tag() == "stage2":
                stage2.add(histogram)
        assert stage2.get_total_count() == stages[1].ops[name].latency.get_total_count()


def test_a_stage_without_windows_is_one_interval(tmp_path: Path) -> None:
    stage = _no_windows()
    logs = write_hlogs([stage], tmp_path)
    (interval,) = _read_log(logs["list"])
    assert interval.get_tag() == "stage1"
    assert interval.get_total_count() == stage.ops["list"].latency.get_total_count() == 200
    assert interval.get_end_time_stamp() / 1000 == pytest.approx(20.0)
    # The stage's own histogram is not stamped with the log's times.
    assert stage.ops["list"].latency.get_start_time_stamp() == 0


def test_operation_names_become_safe_file_names(tmp_path: Path) -> None:
    recorder = StageRecorder()
    recorder.record("GET /items/{id}", 0.1, 0.01)
    logs = write_hlogs([_stage(recorder)], tmp_path)
    assert logs["GET /items/{id}"].name == "load-GET__items__id_.hlog"
    assert logs["GET /items/{id}"].parent == tmp_path


# --- attachments --------------------------------------------------------------------------------


def test_nothing_is_written_or_attached_without_allure(tmp_path: Path) -> None:
    load_report.attach_load_report(PlanResult(_plan()), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_with_allure_the_table_charts_and_logs_are_attached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    attached: list[tuple[str, Any, Any]] = []

    def attach(body: str, name: str, attachment_type: Any) -> None:
        attached.append((name, attachment_type, body))

    def attach_file(
        source: str, name: str, attachment_type: Any, extension: str | None = None
    ) -> None:
        assert Path(source).stat().st_size > 0
        attached.append((name, attachment_type, extension))

    attach.file = attach_file  # type: ignore[attr-defined]
    monkeypatch.setattr(load_report, "listening", lambda: True)
    monkeypatch.setattr(load_report, "allure", SimpleNamespace(attach=attach))
    memory = {"api": [(0.0, 1e8), (30.0, 1.1e8)]}
    load_report.attach_load_report(
        PlanResult(_plan()), tmp_path, memory=memory, exclude=NOT_RESPONSE_TIMES
    )
    names = [name for name, *_ in attached]
    assert names == [
        "load stages",
        "latency by stage",
        "load over time",
        "memory over time",
        "histograms agent_final_event.hlog",
        "histograms list.hlog",
        "histograms post.hlog",
    ]
    kinds = {name: (kind, extra) for name, kind, extra in attached}
    assert kinds["load stages"][0].mime_type == "text/html"
    assert "<table>" in kinds["load stages"][1]
    assert kinds["latency by stage"][0].mime_type == "image/png"
    assert kinds["histograms list.hlog"] == ("text/plain", "hlog")


def test_the_report_files_without_memory(tmp_path: Path) -> None:
    files = write_load_report(PlanResult(_plan()[:1]), tmp_path / "report")
    assert "memory over time" not in files
    assert {p.suffix for p in files.values()} == {".html", ".png", ".hlog"}


# --- the terminal -------------------------------------------------------------------------------


def test_the_terminal_summary_shows_the_stage_table(apex: ApexPytester) -> None:
    result, _ = run_suite(apex, "agent", *SHORT, "--alluredir=allure-results", agent=True)
    assert result.ret == 0, result.stdout.str()
    out = result.stdout.str()
    section = out[out.index("apex criteria") :]
    assert "load stages of " in section
    assert "test_staged_users_hold_the_slos" in section
    result.stdout.fnmatch_lines(
        [
            "*load stages of *test_staged_users_hold_the_slos:",
            "*stage*users*requests*req/s*errors*p50 s*p95 s*p99 s*max s*p95 list*gen CPU",
            "*1*2/2*",
            "*2*4/4*",
        ]
    )
    header = next(line for line in section.splitlines() if "req/s" in line)
    assert "agent_final_event" not in header  # not an HTTP answer
    # And the Allure results hold the attachments.
    results = apex.path / "allure-results"
    suffixes = Counter(p.suffix for p in results.glob("*-attachment.*"))
    assert suffixes[".png"] >= 2
    assert suffixes[".html"] == 1
    assert suffixes[".hlog"] >= 3


# A load test's report properties, as the suite sets them, from an xdist worker.
PROPERTY_TEST = """
import json

import pytest

ROWS = [
    {"stage": 1, "users": 10, "reached": 10, "requests": 1200, "requests_per_s": 60.0,
     "error_rate": 0.0, "p50_s": 0.01, "p95_s": 0.05, "p99_s": 0.09, "max_s": 0.2,
     "p95_s_by_op": {"list": 0.04}, "generator_cpu_percent": 12.0},
    {"stage": 2, "users": 25, "reached": 20, "requests": 2000, "requests_per_s": 100.0,
     "error_rate": None, "p50_s": None, "p95_s": None, "p99_s": None, "max_s": None,
     "p95_s_by_op": {}, "generator_cpu_percent": None},
]

@pytest.mark.load
def test_staged(apex_criteria, request):
    request.node.user_properties.append(("load", json.dumps(ROWS)))
    apex_criteria.check("p95", 0.05, 2.0, "<", unit="s")
"""


def test_the_stage_table_comes_back_from_xdist_workers(apex: ApexPytester) -> None:
    apex.pytester.makepyfile(test_props=PROPERTY_TEST)
    result = apex.run("-n", "1")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "*apex criteria*",
            "verdict: PASS*",
            "load stages of test_props.py::test_staged:",
            "  stage  users  requests  req/s  errors   p50 s   p95 s   p99 s  max s  p95 list"
            "  gen CPU",
            "      1  10/10      1200   60.0  0.00 %  0.0100  0.0500  0.0900  0.200    0.0400"
            "     12 %",
            "      2  20/25      2000    100       –       –       –       –      –         –"
            "        –",
        ]
    )
