"""The load run's report: a per-stage table, charts, and the raw histograms as interval logs.

Plain values in (a `PlanResult`'s stages), files and text out; nothing read from pytest or
the engine while it runs. Used by the load suite (Allure attachments, only when Allure is
recording) and by the terminal summary (the table, from the test report's properties).

- `stage_table` gives one row per stage (numbers, or None when nothing was measured), which
  `stage_table_html` and `stage_table_text` render.
- `latency_by_stage`, `over_time` and `memory_over_time` draw PNGs with matplotlib's Agg
  canvas on a `Figure` of their own, like `pytest_apex.reporting.contamination` (never
  pyplot). Stages that measured nothing, NaN and a single stage are drawn, not refused.
- `write_hlogs` writes one HdrHistogram interval log per operation (`hdrh.log`'s writer),
  one interval per time window, tagged with its stage (``stage2``), timestamps in seconds
  since the run started, values in microseconds: HdrHistogram's own tools
  (``HistogramLogProcessor -tag stage2``) and `hdrh.log.HistogramLogReader` read it back.

Latency columns and charts cover the operations not in `exclude` (the load suite excludes the
agent's milestones, which are not HTTP answers); request, rate and error counts cover every
operation, as `StageResult` counts them.
"""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import allure
from allure_commons.types import AttachmentType

from pytest_apex.criteria import format_number
from pytest_apex.load.measure import (
    OpMeasurements,
    new_histogram,
    percentile_s,
    summarize,
)
from pytest_apex.load.result import PlanResult, StageResult
from pytest_apex.redaction import redact
from pytest_apex.reporting.allure import listening

if TYPE_CHECKING:
    from hdrh.histogram import HdrHistogram
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

_DPI: Final = 100
PERCENTILES: Final = (50, 95, 99)
_PERCENTILE_COLOURS: Final = {50: "#1565c0", 95: "#ef6c00", 99: "#c62828"}
_BOUNDARY: Final = "#9e9e9e"
LOAD_PROPERTY: Final = "load"  # the load suite's user property: its stages as JSON
HLOG_MIME: Final = "text/plain"
HLOG_EXTENSION: Final = "hlog"
# HistogramLogWriter's Interval_Max column: microsecond values / 1000 = milliseconds.
_HLOG_MAX_RATIO: Final = 1000.0
_TAG_UNSAFE: Final = re.compile(r"[^A-Za-z0-9_.-]")

Row = dict[str, Any]


# --- the table --------------------------------------------------------------------------------


def _finite(value: float, digits: int = 6) -> float | None:
    return round(value, digits) if math.isfinite(value) else None


def _http(stage: StageResult, exclude: Collection[str]) -> list[OpMeasurements]:
    return [op for name, op in stage.ops.items() if name not in exclude]


def stage_row(stage: StageResult, *, exclude: Collection[str] = ()) -> Row:
    """One stage in plain, JSON-able numbers (None where nothing was measured)."""
    merged = new_histogram()
    for op in _http(stage, exclude):
        merged.add(op.latency)
    latency = summarize(merged)
    cpu = stage.health.cpu_percent
    return {
        "stage": stage.index,
        "users": stage.target,
        "reached": stage.reached,
        "requests": stage.completed,
        "requests_per_s": _finite(stage.requests_per_s, 1),
        "error_rate": _finite(stage.error_rate, 9),
        "p50_s": _finite(latency.p50_s),
        "p95_s": _finite(latency.p95_s),
        "p99_s": _finite(latency.p99_s),
        "max_s": _finite(latency.max_s),
        "mean_s": _finite(latency.mean_s),
        "p95_s_by_op": {
            name: _finite(percentile_s(op.latency, 95))
            for name, op in sorted(stage.ops.items())
            if name not in exclude
        },
        "generator_cpu_percent": _finite(cpu, 1),
    }


def stage_table(stages: Sequence[StageResult], *, exclude: Collection[str] = ()) -> list[Row]:
    """One `stage_row` per stage, in order."""
    return [stage_row(stage, exclude=exclude) for stage in stages]


def _ops(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    return sorted({name for row in rows for name in row.get("p95_s_by_op") or {}})


def _num(value: Any) -> str:
    return "–" if value is None else format_number(value)


def _percent(value: Any) -> str:
    return "–" if value is None else f"{value * 100:.2f} %"


def _cells(rows: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Header and text cells shared by the HTML and the plain-text table."""
    ops = _ops(rows)
    header = [
        "stage",
        "users",
        "requests",
        "req/s",
        "errors",
        "p50 s",
        "p95 s",
        "p99 s",
        "max s",
        *(f"p95 {op}" for op in ops),
        "gen CPU",
    ]
    body = []
    for row in rows:
        by_op = row.get("p95_s_by_op") or {}
        cpu = row.get("generator_cpu_percent")
        body.append(
            [
                str(row.get("stage", "")),
                f"{row.get('reached', '?')}/{row.get('users', '?')}",
                str(row.get("requests", "")),
                _num(row.get("requests_per_s")),
                _percent(row.get("error_rate")),
                _num(row.get("p50_s")),
                _num(row.get("p95_s")),
                _num(row.get("p99_s")),
                _num(row.get("max_s")),
                *(_num(by_op.get(op)) for op in ops),
                "–" if cpu is None else f"{cpu:.0f} %",
            ]
        )
    return header, body


def stage_table_text(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The table as aligned plain-text lines (header first; numbers right-aligned)."""
    if not rows:
        return []
    header, body = _cells(rows)
    widths = [max(len(line[i]) for line in (header, *body)) for i in range(len(header))]
    return [
        "  ".join(cell.rjust(widths[i]) for i, cell in enumerate(line)).rstrip()
        for line in (header, *body)
    ]


def terminal_lines(tables: Sequence[tuple[str, Sequence[Mapping[str, Any]]]]) -> list[str]:
    """The terminal summary's load section: per test (its node id), its stage table."""
    lines = []
    for test, rows in tables:
        if rows:
            lines.append(f"load stages of {test}:")
            lines += [f"  {line}" for line in stage_table_text(rows)]
    return lines


def rows_from_properties(properties: Sequence[Any]) -> list[dict[str, Any]] | None:
    """The stage rows a load test put in its report's ``user_properties`` as ``("load",
    json)`` (None when it put none, or something unreadable)."""
    for entry in properties:
        try:
            name, value = entry
        except (TypeError, ValueError):
            continue
        if name != LOAD_PROPERTY:
            continue
        try:
            rows = json.loads(value)
        except (TypeError, ValueError):
            return None
        if isinstance(rows, list) and all(isinstance(row, dict) for row in rows):
            return rows
        return None
    return None


_HTML_STYLE: Final = (
    "table{border-collapse:collapse;font:13px/1.4 -apple-system,Segoe UI,Helvetica,Arial,"
    "sans-serif}th,td{border:1px solid #ddd;padding:4px 8px}th{background:#f5f5f5;"
    "text-align:center}td{text-align:right;font-variant-numeric:tabular-nums}"
    "caption{text-align:left;font-weight:bold;padding:4px 0}"
)


def stage_table_html(rows: Sequence[Mapping[str, Any]], *, title: str = "load stages") -> str:
    """A small self-contained HTML page holding the table (every text escaped)."""
    header, body = _cells(rows)
    head = "".join(f"<th>{html.escape(cell)}</th>" for cell in header)
    lines = "".join(
        "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in line) + "</tr>"
        for line in body
    )
    return (
        '<!DOCTYPE html><html><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_HTML_STYLE}</style></head><body>"
        f"<table><caption>{html.escape(title)}</caption><thead><tr>{head}</tr></thead>"
        f"<tbody>{lines}</tbody></table></body></html>\n"
    )


# --- charts -----------------------------------------------------------------------------------


def latency_by_stage(
    stages: Sequence[StageResult], path: Path, *, exclude: Collection[str] = ()
) -> Path:
    """p50, p95 and p99 by stage: one panel for every operation together, one per operation."""
    names = sorted({name for stage in stages for name in stage.ops if name not in exclude})
    panels: list[tuple[str, str | None]] = [("all HTTP operations", None)]
    panels += [(name, name) for name in names]
    columns = 1 if len(panels) == 1 else 2
    rows = math.ceil(len(panels) / columns)
    figure = _new_figure(5.2 * columns, 0.8 + 3.0 * rows)
    labels = [f"{stage.index}\n{stage.target} users" for stage in stages]
    xs = list(range(len(stages)))
    for n, (title, op) in enumerate(panels):
        axes = figure.add_subplot(rows, columns, n + 1)
        drawn: list[float] = []
        for p in PERCENTILES:
            ys = [_stage_percentile(stage, op, p, exclude) for stage in stages]
            if any(math.isfinite(y) for y in ys):
                drawn += ys
                axes.plot(
                    xs, ys, marker="o", color=_PERCENTILE_COLOURS[p], label=f"p{p}", linewidth=1.5
                )
        axes.set_xticks(xs, labels, fontsize=8)
        axes.set_xlim(-0.5, max(len(stages) - 0.5, 0.5))
        axes.set_title(title, fontsize=10)
        axes.set_ylabel("seconds")
        axes.grid(axis="y", color="#eeeeee")
        if drawn:
            _maybe_log(axes, drawn)
            axes.legend(fontsize=8, frameon=False)
        else:
            _empty(axes, "no successful operation")
    figure.suptitle("latency by stage", fontsize=12)
    figure.tight_layout()
    return _save(figure, path)


def _stage_percentile(
    stage: StageResult, op: str | None, percentile: float, exclude: Collection[str]
) -> float:
    if op is not None:
        measured = stage.ops.get(op)
        return math.nan if measured is None else percentile_s(measured.latency, percentile)
    merged = new_histogram()
    for measured in _http(stage, exclude):
        merged.add(measured.latency)
    return percentile_s(merged, percentile)


def stage_offsets(stages: Sequence[StageResult]) -> list[float]:
    """When each stage started, in seconds since the run started (stages run back to back)."""
    offsets, start = [], 0.0
    for stage in stages:
        offsets.append(start)
        start += stage.elapsed_s if math.isfinite(stage.elapsed_s) else 0.0
    return offsets


def windows(
    stages: Sequence[StageResult], *, exclude: Collection[str] = ()
) -> list[tuple[float, float, int, int, float]]:
    """Every window of the run: (start s since the run started, length s, operations, errors,
    p95 s of the operations not excluded), in time order."""
    found = []
    for stage, offset in zip(stages, stage_offsets(stages), strict=True):
        for index in stage.window_indexes():
            start = index * stage.window_s
            length = _window_length(stage, start)
            merged = new_histogram()
            ops = errors = 0
            for name, op in stage.ops.items():
                window = op.windows.get(index)
                if window is None:
                    continue
                failed = sum(window.errors.values())
                ops += window.count + failed
                errors += failed
                if name not in exclude and window.count:
                    merged.decode_and_add(window.blob)
            found.append((offset + start, length, ops, errors, percentile_s(merged, 95)))
    return found


def _window_length(stage: StageResult, start: float) -> float:
    """A window's length: the last one ends with the stage (a straggler's keeps its full size)."""
    left = stage.elapsed_s - start
    return min(stage.window_s, left) if left > 0 else stage.window_s


def over_time(stages: Sequence[StageResult], path: Path, *, exclude: Collection[str] = ()) -> Path:
    """Requests/s, p95 and errors in every window across the run, stage boundaries marked."""
    figure = _new_figure(11.0, 7.5)
    rate_axes, p95_axes, error_axes = figure.subplots(3, 1, sharex=True)
    found = windows(stages, exclude=exclude)
    xs = [start + length / 2 for start, length, *_ in found]
    rates = [ops / length if length > 0 else math.nan for _, length, ops, _, _ in found]
    p95s = [p95 for *_, p95 in found]
    widths = [length * 0.9 for _, length, *_ in found]
    if found:
        # Lines break between stages: a stage's rate is not joined to the next one's.
        breaks = [o for o in stage_offsets(stages)[1:] if o not in xs]
        line_xs, line_rates, line_p95s = (
            list(values)
            for values in zip(
                *sorted(
                    [*zip(xs, rates, p95s, strict=True), *((o, math.nan, math.nan) for o in breaks)]
                ),
                strict=True,
            )
        )
        rate_axes.plot(line_xs, line_rates, marker=".", color="#1565c0")
        if any(math.isfinite(p) for p in p95s):
            p95_axes.plot(line_xs, line_p95s, marker=".", color="#ef6c00")
        else:
            _empty(p95_axes, "no successful operation")
        error_axes.bar(xs, [e for *_, e, _ in found], width=widths, color="#c62828")
    else:
        for axes in (rate_axes, p95_axes, error_axes):
            _empty(axes, "no window measured")
    rate_axes.margins(y=0.2)  # room for the stage labels along the top
    rate_axes.set_ylabel("requests/s")
    p95_axes.set_ylabel("p95 (s)")
    error_axes.set_ylabel("errors")
    error_axes.set_xlabel("seconds since the run started")
    for axes in (rate_axes, p95_axes, error_axes):
        axes.grid(axis="y", color="#eeeeee")
    _mark_stages(stages, (rate_axes, p95_axes, error_axes))
    window_s = sorted({stage.window_s for stage in stages})
    per = ", ".join(f"{format_number(w)} s" for w in window_s) or "–"
    figure.suptitle(f"load over time (per window of {per})", fontsize=12)
    figure.tight_layout()
    return _save(figure, path)


def memory_over_time(
    memory: Mapping[str, Sequence[tuple[float, float]]] | None,
    path: Path,
    *,
    stages: Sequence[StageResult] = (),
) -> Path | None:
    """Each service's memory over the run (seconds since the run started, bytes), in MB.

    None, and no file, when there is nothing to draw (no service or no sample).
    """
    series = {name: list(points) for name, points in (memory or {}).items() if points}
    if not series:
        return None
    figure = _new_figure(11.0, 4.5)
    axes = figure.add_subplot()
    for name, points in sorted(series.items()):
        points.sort()
        axes.plot(
            [t for t, _ in points],
            [b / 1_000_000 for _, b in points],
            marker="." if len(points) < 50 else None,
            label=name,
            linewidth=1.3,
        )
    axes.set_xlabel("seconds since the run started")
    axes.set_ylabel("memory (MB)")
    axes.grid(color="#eeeeee")
    _mark_stages(stages, (axes,))
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    axes.set_title("memory over time", fontsize=12)
    figure.tight_layout()
    return _save(figure, path)


def _mark_stages(stages: Sequence[StageResult], all_axes: Sequence[Axes]) -> None:
    for stage, offset in zip(stages, stage_offsets(stages), strict=True):
        for axes in all_axes:
            axes.axvline(offset, color=_BOUNDARY, linestyle="--", linewidth=0.8)
        top = all_axes[0]
        top.annotate(
            f"{stage.index}: {stage.target} users",
            xy=(offset, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(3, -3),
            textcoords="offset points",
            fontsize=7,
            color="#555555",
            va="top",
        )


def _maybe_log(axes: Axes, values: Sequence[float]) -> None:
    """A log scale when the values drawn span more than a decade and a half."""
    drawn = [y for y in values if math.isfinite(y) and y > 0]
    if drawn and max(drawn) / min(drawn) > 30:
        axes.set_yscale("log")


def _empty(axes: Axes, text: str) -> None:
    axes.text(0.5, 0.5, text, ha="center", va="center", transform=axes.transAxes, color="#777777")
    axes.set_yticks([])


def _new_figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=_DPI)
    FigureCanvasAgg(figure)  # the figure renders through Agg: no display, no pyplot
    return figure


def _save(figure: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=_DPI, bbox_inches="tight")
    return path


# --- raw histograms ---------------------------------------------------------------------------


def hlog_tag(stage: StageResult) -> str:
    return f"stage{stage.index}"


def _safe(name: str) -> str:
    return _TAG_UNSAFE.sub("_", name) or "op"


def write_hlogs(stages: Sequence[StageResult], directory: Path) -> dict[str, Path]:
    """One interval log per operation (`directory`/load-OP.hlog); returns op -> path.

    Each interval is one window of one stage (the whole stage when it kept no windows),
    tagged ``stageN``; summed, an operation's intervals are exactly its stages' histograms.
    """
    from hdrh.log import HistogramLogWriter

    directory.mkdir(parents=True, exist_ok=True)
    names = sorted({name for stage in stages for name in stage.ops})
    offsets = stage_offsets(stages)
    written = {}
    for name in names:
        path = directory / f"load-{_safe(name)}.{HLOG_EXTENSION}"
        with path.open("w", encoding="utf-8") as out:
            writer = HistogramLogWriter(out)
            writer.output_comment(f"[pytest-apex load run: operation {name}; values in us]")
            writer.output_comment(
                "[intervals: one per window, tagged with their stage; "
                "timestamps in s since the run started]"
            )
            writer.output_log_format_version()
            writer.output_legend()
            for stage, offset in zip(stages, offsets, strict=True):
                op = stage.ops.get(name)
                if op is None:
                    continue
                for start, length, histogram in _intervals(stage, op):
                    # hdrh's writer has no tag parameter: the tag goes first on the line,
                    # as HdrHistogram's format puts it ("Tag=stage2,start,length,max,blob").
                    out.write(f"Tag={hlog_tag(stage)},")
                    # The writer takes a timestamp of 0 for "none given", and then the
                    # histogram's own (in ms): stamp the histogram, pass none.
                    histogram.set_start_time_stamp((offset + start) * 1000)
                    histogram.set_end_time_stamp((offset + start + length) * 1000)
                    writer.output_interval_histogram(
                        histogram, max_value_unit_ratio=_HLOG_MAX_RATIO
                    )
        written[name] = path
    return written


def _intervals(stage: StageResult, op: OpMeasurements) -> list[tuple[float, float, HdrHistogram]]:
    if not op.windows:
        length = stage.elapsed_s if stage.elapsed_s > 0 else stage.window_s
        whole = new_histogram()  # a copy: the stage's own histogram is not stamped
        whole.add(op.latency)
        return [(0.0, length, whole)]
    return [
        (index * stage.window_s, _window_length(stage, index * stage.window_s), window.histogram())
        for index, window in sorted(op.windows.items())
    ]


# --- Allure -----------------------------------------------------------------------------------


def write_load_report(
    result: PlanResult,
    directory: Path,
    *,
    memory: Mapping[str, Sequence[tuple[float, float]]] | None = None,
    exclude: Collection[str] = (),
) -> dict[str, Path]:
    """Every file of the report in `directory`: name -> path (memory only when given)."""
    stages = result.stages
    files = {}
    table = directory / "load-stages.html"
    directory.mkdir(parents=True, exist_ok=True)
    table.write_text(stage_table_html(stage_table(stages, exclude=exclude)), encoding="utf-8")
    files["load stages"] = table
    files["latency by stage"] = latency_by_stage(
        stages, directory / "load-latency.png", exclude=exclude
    )
    files["load over time"] = over_time(stages, directory / "load-over-time.png", exclude=exclude)
    picture = memory_over_time(memory, directory / "load-memory.png", stages=stages)
    if picture is not None:
        files["memory over time"] = picture
    for name, path in write_hlogs(stages, directory).items():
        files[f"histograms {name}.{HLOG_EXTENSION}"] = path
    return files


def attach_load_report(
    result: PlanResult,
    tmp_path: Path,
    memory: Mapping[str, Sequence[tuple[float, float]]] | None = None,
    *,
    exclude: Collection[str] = (),
) -> None:
    """Attach the table, the charts and the interval logs to the current test (Allure only)."""
    if not listening():
        return
    for name, path in write_load_report(
        result, tmp_path / "load-report", memory=memory, exclude=exclude
    ).items():
        if path.suffix == ".html":
            allure.attach(
                redact(path.read_text(encoding="utf-8")),
                name=name,
                attachment_type=AttachmentType.HTML,
            )
        elif path.suffix == ".png":
            allure.attach.file(str(path), name=name, attachment_type=AttachmentType.PNG)
        else:
            allure.attach.file(
                str(path), name=name, attachment_type=HLOG_MIME, extension=HLOG_EXTENSION
            )
