"""`pytest -m <suite>` collects the suites the plugin ships, in any project, each test once."""

from __future__ import annotations

import pytest

from pytest_apex.suites.collection import SUITES_DIR, suite_files
from tests.plugin.conftest import ApexPytester


def test_the_marker_expression_names_the_suites_to_add() -> None:
    assert suite_files("health", ("health", "isolation")) == [SUITES_DIR / "test_health.py"]
    assert suite_files("health or isolation", ("health", "isolation")) == [
        SUITES_DIR / "test_health.py",
        SUITES_DIR / "test_isolation.py",
    ]
    assert suite_files("", ("health",)) == []
    assert suite_files("healthy", ("health",)) == []  # a word, not a substring


def _collect(apex: ApexPytester, *args: str) -> pytest.RunResult:
    return apex.run(*args, "--co", "-q", "--apex-url=api=http://127.0.0.1:9")


def _collected(result: pytest.RunResult) -> list[str]:
    return [line for line in result.stdout.lines if "::test_" in line]


def test_a_project_selecting_a_suite_collects_the_shipped_one(apex: ApexPytester) -> None:
    # End to end, from the built wheel: tests/notes/test_as_a_new_project.py.
    apex.pytester.makepyfile(test_mine="def test_mine():\n    pass\n")
    collected = _collected(_collect(apex, "-m", "health"))
    assert any("test_every_service_is_live" in line for line in collected), collected
    assert not any("test_mine" in line for line in collected)
    assert _collected(_collect(apex)) == ["test_mine.py::test_mine"]  # no marker: none added


def test_a_project_that_collects_the_suite_itself_runs_each_test_once(apex: ApexPytester) -> None:
    apex.pytester.makepyfile(
        test_health_here="from pytest_apex.suites.test_health import *  # noqa: F403\n"
    )
    result = _collect(apex, "-m", "health")
    collected = _collected(result)
    names = [line.split("::", 1)[1] for line in collected]
    assert len(names) == len(set(names)), collected
    assert all(line.startswith("test_health_here.py::") for line in collected), collected
    # The shipped copy was collected too, and dropped: one deselected for each kept.
    result.stdout.fnmatch_lines(
        [f"{len(names)}/{2 * len(names)} tests collected ({len(names)} deselected)*"]
    )


def test_the_load_marker_collects_the_shipped_load_suite(apex: ApexPytester) -> None:
    collected = _collected(_collect(apex, "-m", "load"))
    assert [line.split("::", 1)[1] for line in collected] == [
        "test_staged_users_hold_the_slos",
        "test_soak_holds_memory_and_availability",
    ]


def test_the_soak_marker_collects_only_the_soak_from_the_load_module(apex: ApexPytester) -> None:
    collected = _collected(_collect(apex, "-m", "soak"))
    assert [line.split("::", 1)[1] for line in collected] == [
        "test_soak_holds_memory_and_availability"
    ]
