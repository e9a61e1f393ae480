"""The end-of-run table: one row per criterion, grouped by suite, then the verdict."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pytest_apex.criteria import Criterion, Verdict, format_number

PASS_MARK, FAIL_MARK = "✓", "✗"
ASCII_PASS_MARK, ASCII_FAIL_MARK = "ok", "FAIL"


@dataclass(frozen=True)
class Line:
    """One line of the summary and how to colour it."""

    text: str
    green: bool = False
    red: bool = False
    bold: bool = False


def _cells(criterion: Criterion, marks: tuple[str, str]) -> list[str]:
    return [
        marks[0] if criterion.passed else marks[1],
        criterion.name,
        format_number(criterion.observed),
        criterion.op,
        format_number(criterion.threshold),
        criterion.unit,
        criterion.stage.describe() if criterion.stage else "",
    ]


def render(verdict: Verdict, report: Path | None, *, unicode: bool = True) -> list[Line]:
    """The summary as lines; empty when nothing was recorded (plain test runs stay quiet)."""
    if not verdict.criteria:
        return []
    marks = (PASS_MARK, FAIL_MARK) if unicode else (ASCII_PASS_MARK, ASCII_FAIL_MARK)
    groups = verdict.by_suite()
    rows = {id(c): _cells(c, marks) for group in groups.values() for c in group}
    widths = [max(len(row[i]) for row in rows.values()) for i in range(7)]

    def fmt(cells: list[str]) -> str:
        # Numbers right-aligned so magnitudes line up; text left-aligned.
        aligned = [
            cell.rjust(widths[i]) if i in (2, 4) else cell.ljust(widths[i])
            for i, cell in enumerate(cells)
        ]
        return "  " + "  ".join(aligned).rstrip()

    lines: list[Line] = []
    for suite, criteria in groups.items():
        failed = sum(not c.passed for c in criteria)
        lines.append(Line(f"{suite}: {len(criteria) - failed} passed, {failed} failed", bold=True))
        lines += [Line(fmt(rows[id(c)]), green=c.passed, red=not c.passed) for c in criteria]
    total, failed = len(verdict.criteria), len(verdict.failed_criteria)
    summary = f"verdict: {verdict.status.upper()} ({total - failed}/{total} criteria met"
    if verdict.session_failed and not failed:
        summary += "; the test session failed"
    summary += ")"
    lines.append(Line(summary, green=verdict.passed, red=not verdict.passed, bold=True))
    if report is not None:
        lines.append(Line(f"report: {report}"))
    return lines


def can_encode(text: str, encoding: str | None) -> bool:
    try:
        text.encode(encoding or "utf-8")
    except (UnicodeEncodeError, LookupError):
        return False
    return True
