"""The plugin type-checks: mypy strict on pytest_apex/, as `tox -e type` runs it.

The configuration (strict, the files, the third-party packages without types) is pyproject's
`[tool.mypy]`; mypy and the stubs come with the dev extra.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Skipped where the dev extra is not installed; in CI (CI=true) a missing mypy fails instead.
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("mypy") is None and not os.environ.get("CI"),
    reason="mypy not installed (it comes with the dev extra: pip install -e .[dev])",
)


def test_mypy_strict_passes(tmp_path: Path) -> None:
    # A fresh cache: what a clean checkout gets, never a stale answer (about 10-15 s cold).
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--config-file",
            str(ROOT / "pyproject.toml"),
            "--cache-dir",
            str(tmp_path / "mypy-cache"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, (
        f"mypy exited {result.returncode}:\n{result.stdout}{result.stderr}"
    )
