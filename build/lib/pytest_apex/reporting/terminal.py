"""The end-of-run table: one row per criterion, grouped by suite, then the verdict and why."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

from pytest_apex.criteria import Criterion, Outcome, Verdict, format_number

PASS_MARK, FAIL_MARK, INCONCLUSIVE_MARK = "✓", "✗", "?"
ASCII_PASS_MARK, ASCII_FAIL_MARK, ASCII_INCONCLUSIVE_MARK = "ok", "FAIL", "INCONCLUSIVE"
UNICODE_MARKS: Final[dict[Outcome, str]] = {
    "pass": PASS_MARK,
    "fail": FAIL_MARK,
    "inconclusive": INCONCLUSIVE_MARK,
}
ASCII_MARKS: Final[dict[Outcome, str]] = {
    "pass": ASCII_PASS_MARK,
    "fail": ASCII_FAIL_MARK,
    "inconclusive": ASCII_INCONCLUSIVE_MARK,
}
_NUMBER_COLUMNS: Final = (2, 4)


@dataclass(frozen=True)
class Line:
    """One line of the summary and how to colour it."""

    text: str
    green: bool = False
    red: bool = False
    yellow: bool = False
    bold: bool = False

    @classmethod
    def of(cls, text: str, outcome: Outcome, *, bold: bool = False) -> Line:
        """A line coloured by outcome: green pass, red fail, yellow inconclusive."""
        return cls(
            text,
            green=outcome == "pass",
            red=outcome == "fail",
            yellow=outcome == "inconclusive",
            bold=bold,
        )


def _cells(criterion: Criterion, marks: dict[Outcome, str]) -> list[str]:
    return [
        marks[criterion.outcome],
        criterion.name,
        format_number(criterion.observed),
        criterion.op,
        format_number(criterion.threshold),
        criterion.unit,
        criterion.stage.describe() if criterion.stage else "",
        criterion.reason,  # why it could not be judged ("" otherwise)
    ]


def _suite_header(suite: str, criteria: list[Criterion]) -> str:
    counts = {o: sum(c.outcome == o for c in criteria) for o in ("pass", "fail", "inconclusive")}
    return (
        f"{suite}: {counts['pass']} passed, {counts['fail']} failed, "
        f"{counts['inconclusive']} inconclusive"
    )


def _verdict_line(verdict: Verdict) -> str:
    total, met = len(verdict.criteria), sum(c.passed for c in verdict.criteria)
    text = f"verdict: {verdict.status.upper()} ({met}/{total} criteria met"
    undecided = verdict.inconclusive_criteria
    if undecided:
        names = ", ".join(f"{c.suite} {c.name}" for c in undecided)
        text += f"; {len(undecided)} inconclusive: {names}"
    if verdict.session_failed and not verdict.failed_criteria:
        text += "; the test session failed"
    return text + ")"


def render(verdict: Verdict, report: Path | None, *, unicode: bool = True) -> list[Line]:
    """The summary as lines; empty for a plain test run (no suite ran, nothing recorded)."""
    if not verdict.applies:
        return []
    marks = UNICODE_MARKS if unicode else ASCII_MARKS
    groups = verdict.by_suite()
    rows = {id(c): _cells(c, marks) for group in groups.values() for c in group}
    widths = [max((len(row[i]) for row in rows.values()), default=0) for i in range(8)]

    def fmt(cells: list[str]) -> str:
        # Numbers right-aligned so magnitudes line up; text left-aligned; columns empty in
        # every row (no unit, no stage anywhere) take no room.
        aligned = [
            cell.rjust(widths[i]) if i in _NUMBER_COLUMNS else cell.ljust(widths[i])
            for i, cell in enumerate(cells)
            if widths[i]
        ]
        return "  " + "  ".join(aligned).rstrip()

    lines: list[Line] = []
    for suite, criteria in groups.items():
        lines.append(Line(_suite_header(suite, criteria), bold=True))
        lines += [Line.of(fmt(rows[id(c)]), c.outcome) for c in criteria]
    status = verdict.status
    lines.append(Line.of(_verdict_line(verdict), status, bold=True))
    # What the table cannot show: crashed workers, tests that ended without a judgement,
    # suites that ran and recorded nothing.
    lines += [Line.of(f"  {failure}", "fail") for failure in verdict.run_failures]
    lines += [
        Line.of(f"  inconclusive test {t.test}: {t.reason}", "inconclusive")
        for t in verdict.inconclusive_tests
    ]
    lines += [
        Line.of(f"  suite {suite} ran but recorded no criterion", "inconclusive")
        for suite in verdict.silent_suites
    ]
    if report is not None:
        lines.append(Line(f"report: {report}"))
    return lines


def can_encode(text: str, encoding: str | None) -> bool:
    try:
        text.encode(encoding or "utf-8")
    except (UnicodeEncodeError, LookupError):
        return False
    return True
