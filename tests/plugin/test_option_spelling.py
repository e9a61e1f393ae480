"""`--apex-stack PATH` with a space must never silently drop the project's ini file."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pytest_apex.settings.spelling import misread_rootdir, spaced_path_options

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "fixtures" / "stack" / "docker-compose.staging.yml"


def test_spaced_path_options_are_found_and_equals_forms_are_not() -> None:
    args = ["-m", "health", "--apex-stack", "a.yml", "--apex-report=r.json", "--apex-app", "-q"]
    assert spaced_path_options(args) == [("--apex-stack", "a.yml")]


def test_a_project_ini_above_the_invocation_directory_is_trusted(tmp_path: Path) -> None:
    ini = tmp_path / "pytest.ini"
    assert misread_rootdir(["--apex-stack", "/x/c.yml"], tmp_path / "sub", ini, tmp_path) == ""


def test_a_run_whose_ini_was_lost_stops_with_the_fix(pytester: pytest.Pytester) -> None:
    project = pytester.mkdir("project")
    (project / "pytest.ini").write_text("[pytest]\nmarkers = mine\n")
    (project / "test_x.py").write_text("def test_x():\n    pass\n")
    elsewhere = pytester.mkdir("elsewhere")
    shutil.copy(COMPOSE, elsewhere / "compose.yml")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(project)
        spaced = pytester.runpytest_subprocess("--apex-stack", "../elsewhere/compose.yml")
        joined = pytester.runpytest_subprocess(
            "--apex-stack=../elsewhere/compose.yml", "--co", "-q"
        )
    assert spaced.ret == pytest.ExitCode.USAGE_ERROR
    spaced.stderr.fnmatch_lines(
        [
            "*--apex-stack ../elsewhere/compose.yml: pytest read the path after the space*"
            "Write it with '=': --apex-stack=../elsewhere/compose.yml*"
        ]
    )
    assert joined.ret == pytest.ExitCode.OK, joined.stdout.str()
    joined.stdout.fnmatch_lines(["*test_x.py::test_x*"])
