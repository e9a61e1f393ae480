"""What the plugin notes on each test report for the verdict, and how the verdict reads it.

The note travels with the report (pytest serialises a report's attributes, so xdist carries
it from a worker to the controller like pytest-html's ``extras``): the test's suite, why it
ended inconclusive, and in a worker the criteria recorded since its previous report
(`pytest_apex.relay`). Only the process that owns the verdict (the controller, or the only
process) reads notes into it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import pytest

from pytest_apex.criteria import InconclusiveTest, Verdict
from pytest_apex.recording import Inconclusive

REPORT_ATTRIBUTE: Final = "apex"


def inconclusive_ending(
    report: pytest.TestReport, excinfo: pytest.ExceptionInfo[BaseException] | None, recorded: bool
) -> str:
    """Why this phase left its test without a judgement ("" when it did not).

    A test that raised `Inconclusive` proved nothing, whatever it recorded; a test that
    skipped after recording criteria proved only part of what it set out to (a skip before
    recording anything is a test that did not apply, and an xfail is no skip).
    """
    if not report.skipped or hasattr(report, "wasxfail"):
        return ""
    if excinfo is not None and excinfo.errisinstance(Inconclusive):
        return str(excinfo.value) or "inconclusive"
    if recorded:
        return f"skipped after recording criteria: {_skip_reason(report)}"
    return ""


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple):  # (path, lineno, reason)
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr or "")


def attach(
    report: pytest.TestReport,
    *,
    suite: str | None,
    inconclusive: str,
    criteria: Sequence[dict[str, Any]] = (),
) -> None:
    note: dict[str, Any] = {"suite": suite, "inconclusive": inconclusive}
    if criteria:
        note["criteria"] = list(criteria)
    setattr(report, REPORT_ATTRIBUTE, note)


def note_of(report: pytest.TestReport) -> dict[str, Any]:
    note = getattr(report, REPORT_ATTRIBUTE, None)
    return note if isinstance(note, dict) else {}


def observe(verdict: Verdict, report: pytest.TestReport) -> None:
    """Read a report's note into the verdict: its suite ran, and whether it ended inconclusive."""
    note = note_of(report)
    if note.get("suite"):
        verdict.note_suite_run(str(note["suite"]))
    if note.get("inconclusive"):
        verdict.inconclusive_tests.append(InconclusiveTest(report.nodeid, note["inconclusive"]))
