"""Building pytest-apex's wheel the way a user gets it, without touching the working tree."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def build_wheel(workdir: Path) -> Path:
    """The wheel built from a copy of the project (a build in place leaves build/ behind)."""
    source = workdir / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(
        ROOT / "pytest_apex", source / "pytest_apex", ignore=shutil.ignore_patterns("__pycache__")
    )
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    subprocess.run(
        [*pip_wheel, "-w", str(workdir / "dist"), str(source)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    [wheel] = (workdir / "dist").glob("pytest_apex-*.whl")
    return wheel
