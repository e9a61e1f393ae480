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

from pytest_apex.targets.compose import ComposeTarget
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
    """Criteria that did not pass (failed or inconclusive)."""
    return [c for c in report.get("criteria", []) if not c.get("passed")]


def outcomes(report: Mapping[str, Any]) -> dict[str, str]:
    """Criterion name -> its outcome (pass, fail, inconclusive)."""
    return {c["name"]: c["outcome"] for c in report.get("criteria", [])}


# A plugin for the child run that attaches it to a running compose project instead of
# starting one: the container checks (non-root, limits, ports) need a compose target, and
# --apex-url gives an external one. It implements the plugin's target-session hook.
_ATTACH_PLUGIN = """
from pathlib import Path

from pytest_apex.reference import PORT_SCHEMES
from pytest_apex.targets.compose import ComposeTarget


class AttachedSession:
    def __init__(self):
        self.target = ComposeTarget(Path({compose_file!r}), {project!r}, port_schemes=PORT_SCHEMES)

    def acquire(self):
        return self.target

    def describe(self):
        return {{"target": self.target.name}}

    def workerinput(self):
        return {{}}

    def finish(self):
        pass  # the proof's stack outlives this run


def pytest_apex_target_session(settings, config):
    return AttachedSession()
"""


def attach_to(pytester: pytest.Pytester, target: ComposeTarget) -> list[str]:
    """Arguments that make a child run test `target` itself, containers included."""
    pytester.makepyfile(
        apex_attach=_ATTACH_PLUGIN.format(
            compose_file=str(target.compose_file), project=target.project
        )
    )
    return ["-p", "apex_attach"]
