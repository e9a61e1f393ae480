"""What the wheel ships beside the code: the JSON report's schema, a contract for CI."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.conftest import ROOT


def test_the_report_schema_ships_in_the_wheel(tmp_path: Path) -> None:
    # Built from a copy, so the build leaves nothing in the working tree.
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(
        ROOT / "pytest_apex", source / "pytest_apex", ignore=shutil.ignore_patterns("__pycache__")
    )
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    subprocess.run(
        [*pip_wheel, "-w", str(tmp_path / "dist"), str(source)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    [wheel] = (tmp_path / "dist").glob("pytest_apex-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        shipped = archive.read("pytest_apex/report.schema.json")
    assert shipped == (ROOT / "pytest_apex" / "report.schema.json").read_bytes()
