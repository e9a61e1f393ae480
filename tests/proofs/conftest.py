"""Helpers for the suite proofs: run a suite in a child pytest against the fault stack.

A proof shows a suite both ways on the same stack: it passes with no fault switched on and
fails, naming the right criterion, with one. The child run is a real pytest process with
the plugin loaded through its entry point, pointed at the fault stack with --apex-url (an
external target), so it never starts a stack of its own.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import pytest

from tests.conftest import ROOT
from tests.report_schema import assert_valid_report

ACCEPTANCE: Final = ROOT / "tests" / "acceptance"
HEALTH_SUITE: Final = ACCEPTANCE / "test_health.py"
SUITE_TIMEOUT_S: Final = 600.0


def run_suite(
    pytester: pytest.Pytester,
    suite_path: Path,
    endpoints: Mapping[str, str],
    extra_args: Sequence[str] = (),
) -> tuple[pytest.RunResult, dict[str, Any]]:
    """Run `suite_path` against `endpoints` in a child pytest; its result and JSON verdict."""
    report = pytester.path / "apex-report.json"
    args = [
        str(suite_path),
        f"--apex-report={report}",
        *(f"--apex-url={service}={url}" for service, url in sorted(endpoints.items())),
        "-p",
        "no:cacheprovider",
        "-rA",  # every outcome's reason in the output, so a failed proof explains itself
        *extra_args,
    ]
    result = pytester.runpytest_subprocess(*args, timeout=SUITE_TIMEOUT_S)
    assert report.is_file(), (
        f"the child run wrote no verdict at {report}:\n{result.stdout.str()}\n{result.stderr.str()}"
    )
    return result, assert_valid_report(json.loads(report.read_text(encoding="utf-8")))


def failed_criteria(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [c for c in report.get("criteria", []) if not c.get("passed")]
