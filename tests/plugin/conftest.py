"""Helpers for the plugin's own tests: a pytester wrapper that installs the fake target."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

# Imported before any in-process pytester run: such a run forgets the modules first imported
# during it, and numpy's C extensions (scipy.stats pulls in numpy.fft, which the soak's memory
# trend and the rollback canary use) refuse to be loaded a second time in one process.
import scipy.stats  # noqa: F401

from tests.report_schema import assert_valid_report

FAKE_SESSION = Path(__file__).with_name("fake_session.py").read_text(encoding="utf-8")


class ApexPytester:
    """pytester with the fake target session as conftest.py, plus readers for its output."""

    def __init__(self, pytester: pytest.Pytester) -> None:
        self.pytester = pytester
        self.path = pytester.path
        self.conftest()

    def conftest(self, extra: str = "") -> None:
        """(Re)write conftest.py: the fake session, then `extra` (more hooks or fixtures)."""
        self.pytester.makeconftest(FAKE_SESSION + "\n\n" + extra)

    # In-process runs import pytest_apex before the inner session marks it for rewriting;
    # pytest-asyncio warns without a loop scope (the project's ini sets one, pytester's not).
    QUIET = (
        "-p",
        "no:cacheprovider",
        "-W",
        "ignore::pytest.PytestAssertRewriteWarning",
        "-o",
        "asyncio_default_fixture_loop_scope=function",
    )

    def run(self, *args: str) -> pytest.RunResult:
        """An in-process pytest run in the pytester directory."""
        return self.pytester.runpytest(*self.QUIET, *args)

    def configure(self, *args: str) -> pytest.Config:
        """A configured (not run) pytest config; unconfigured when the test ends."""
        return self.pytester.parseconfigure(*self.QUIET, *args)

    def report(self, name: str = ".apex/report.json") -> dict[str, Any]:
        """The run's JSON verdict, validated against the shipped schema."""
        return assert_valid_report(json.loads((self.path / name).read_text(encoding="utf-8")))

    def events(self) -> list[dict[str, Any]]:
        return read_events(self.path)


def read_events(directory: Path) -> list[dict[str, Any]]:
    """What the fake target sessions of a run did (see fake_session.py)."""
    path = directory / "events.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def run_projects(
    projects: Mapping[Path, Sequence[str]], test_source: str
) -> dict[Path, subprocess.CompletedProcess[str]]:
    """Run pytest in several fresh project directories at once, each in its own process.

    For runs that cannot share this process: allure-pytest keeps its listeners in a
    process-wide registry, so an in-process run with --alluredir inside a session that
    itself writes Allure results would mix the two. The runs overlap to save time.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["GITHUB_SHA"] = "0123456789abcdef"
    running = {}
    for directory, args in projects.items():
        (directory / "conftest.py").write_text(FAKE_SESSION, encoding="utf-8")
        (directory / "test_suites.py").write_text(textwrap.dedent(test_source), encoding="utf-8")
        command = [sys.executable, "-m", "pytest", *ApexPytester.QUIET, *args]
        running[directory] = subprocess.Popen(
            command,
            cwd=directory,
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
    results = {}
    for directory, proc in running.items():
        output, _ = proc.communicate(timeout=120)
        results[directory] = subprocess.CompletedProcess(proc.args, proc.returncode, output)
    return results


@pytest.fixture
def apex(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> ApexPytester:
    # Deterministic environment.properties and no stray settings from the outer run.
    monkeypatch.setenv("GITHUB_SHA", "0123456789abcdef")
    monkeypatch.delenv("PYTEST_ADDOPTS", raising=False)
    monkeypatch.delenv("APEX_FAULTS", raising=False)  # the environment twin of --apex-faults
    return ApexPytester(pytester)
