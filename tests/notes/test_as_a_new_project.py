"""A team that wrote none of this points pytest-apex at its app: the Notes app, from scratch.

A new, empty project gets only the built wheel of pytest-apex, the Notes compose file and the
app's description in its own pyproject.toml: no test files, no adapter, no conftest.py. Then
`pytest -m health` and `pytest -m isolation` run the suites the plugin ships and pass; with
the planted ownership bug switched on (`--apex-faults`, i.e. the app's own NOTES_BUGS), the
isolation suite fails naming who saw whose data.

The wheel is installed without its dependencies into a fresh virtual environment that borrows
them from the project's own (a path file), so the test needs no package index; what is
imported as `pytest_apex` is the wheel's copy, which the test checks.
"""

from __future__ import annotations

import json
import subprocess
import sysconfig
import venv
from pathlib import Path
from typing import Any, Final

import pytest

from tests.conftest import ROOT
from tests.notes.markers import NOTES_STACK
from tests.wheel import build_wheel

pytestmark = NOTES_STACK

NOTES: Final = ROOT / "fixtures" / "notes"
USERS: Final = 12  # enough users to cross everyone's data; the staging profile runs 150+
RUN_TIMEOUT_S: Final = 600


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty project with the wheel installed, the Notes description in pyproject.toml."""
    base = tmp_path_factory.mktemp("new-project")
    # Built from a copy of the project: an in-place build writes build/ in the checkout, and
    # two at once (this module on each xdist worker) race in it.
    wheel = build_wheel(base)
    env_dir = base / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            str(wheel),
        ],
        check=True,
        timeout=RUN_TIMEOUT_S,
    )
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # The dependencies, borrowed: appended after the venv's own site-packages, so the
    # wheel's pytest_apex is the one imported (the project's editable copy is not on it).
    Path(site, "borrowed-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    app = (
        NOTES.joinpath("apex.toml")
        .read_text(encoding="utf-8")
        .replace("[app", "[tool.pytest-apex.app")
    )
    work = base / "notes-team"
    work.mkdir()
    work.joinpath("pyproject.toml").write_text(
        "[project]\nname = 'notes-team'\nversion = '1'\n\n"
        "[tool.pytest.ini_options]\n"
        f"apex_stack = '{NOTES / 'compose.yml'}'\n\n" + app,
        encoding="utf-8",
    )
    return work


def run(project: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    python = project.parent / "venv" / "bin" / "python"
    report = project / f"report-{len(list(project.glob('report-*')))}.json"
    result = subprocess.run(
        [str(python), "-m", "pytest", "-p", "no:cacheprovider", f"--apex-report={report}", *args],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    assert report.is_file(), f"no verdict written:\n{result.stdout}\n{result.stderr}"
    return result, json.loads(report.read_text(encoding="utf-8"))


def outcomes(report: dict[str, Any]) -> dict[str, str]:
    return {c["name"]: c["outcome"] for c in report["criteria"]}


def test_the_wheel_is_what_the_project_imports(project: Path) -> None:
    python = project.parent / "venv" / "bin" / "python"
    where = subprocess.run(
        [str(python), "-c", "import pytest_apex; print(pytest_apex.__file__)"],
        cwd=project,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert where.startswith(str(project.parent / "venv")), where


def test_health_passes_on_the_clean_app(project: Path) -> None:
    result, report = run(project, "-m", "health")
    assert result.returncode == 0, result.stdout[-4000:]
    assert report["verdict"] == "pass"
    seen = outcomes(report)
    # The described checks ran: format-aware health, the one-shot job, RS256 token refusals.
    for name in (
        "api.liveness",
        "identity.readiness",
        "migrate.compose_health",
        "api.non_root",
        "jwt_alg-none.rest_rejected",
        "api.cors.foreign_origins_refused",
    ):
        assert seen.get(name) == "pass", (name, seen)


# A few users check fewer answers: the rarest leak they must be able to see is 1 in 100.
SMALL_RUN = (
    f"--apex-threshold=concurrent_users_min={USERS}",
    "--apex-threshold=isolation_detectable_leak_rate_max=0.01",
)


def test_isolation_passes_on_the_clean_app(project: Path) -> None:
    result, report = run(project, "-m", "isolation", *SMALL_RUN)
    assert result.returncode == 0, result.stdout[-4000:]
    assert report["verdict"] == "pass"
    seen = outcomes(report)
    assert seen["own_items_listed"] == seen["own_items_read"] == "pass"
    assert seen["cross_user_resource_access"] == "pass"


@pytest.mark.parametrize(
    ("bug", "criterion"),
    [
        ("notebook_idor", "cross_user_resource_access"),
        ("notes_list_leak", "cross_user_resource_access"),
    ],
)
def test_isolation_fails_on_a_planted_ownership_bug_naming_who_saw_whose_data(
    project: Path, bug: str, criterion: str
) -> None:
    result, report = run(
        project,
        "-m",
        "isolation",
        *SMALL_RUN,
        f"--apex-faults={bug}",
    )
    assert result.returncode == 1, result.stdout[-4000:]
    assert report["verdict"] == "fail"
    assert outcomes(report)[criterion] == "fail"
    assert f"isolation {criterion}" in result.stdout
    assert " saw data of user" in result.stdout
