"""Allure output: criterion steps, suite epics, environment, categories, redacted attachments."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from pytest_apex.reporting import allure as allure_report
from tests.conftest import ROOT
from tests.plugin.conftest import ApexPytester, read_events, run_projects
from tests.report_schema import assert_valid_report

SUITE_TESTS = """
import logging
import pytest
from pytest_apex import Stage

@pytest.mark.load
def test_p95(apex_criteria):
    apex_criteria.check("p95", 1.2, 2.0, "<", unit="s", stage=Stage(1, 5, 10))
    apex_criteria.check("p95", 2.41, 2.0, "<", unit="s", stage=Stage(5, 5, 150))

@pytest.mark.isolation
def test_breaches(apex_criteria):
    apex_criteria.check("breaches", 1, 0, "<=")

@pytest.mark.isolation
def test_unjudged(apex_criteria):
    apex_criteria.record("cross_user_events", 0, 0, "<=")
    apex_criteria.check(
        "isolation_violations.rows",
        float("nan"),
        0,
        "<=",
        inconclusive="the database at postgresql://apex:hunter2@db/apex did not answer",
    )

@pytest.mark.isolation
def test_skips_after_recording(apex_criteria):
    apex_criteria.check("cross_user_events", 0, 0, "<=")
    pytest.skip("the database check did not run")

@pytest.mark.health
def test_uses_the_target(apex_target):
    print("login answered {'access_token': 'eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1MSJ9.c2lnbmF0dXJl'}")
    logging.getLogger("apex").warning("POST /auth/login password=hunter2")
    assert apex_target.endpoints() == {}, "Authorization: Bearer sekrit-token-abcdefgh"
"""


def _results(directory: Path) -> dict[str, dict[str, Any]]:
    results = {}
    for path in directory.glob("*-result.json"):
        data = json.loads(path.read_text())
        results[data["name"]] = data
    return results


def _all_text(directory: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in directory.iterdir() if p.is_file())


@pytest.fixture(scope="module")
def allure_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One plain and one ``-n 2`` run of SUITE_TESTS with --alluredir, in their own processes.

    Separate processes (see `run_projects`), run once for the whole module: every test here
    only reads what they wrote.
    """
    names = {
        "single": ["--alluredir=allure-results"],
        "xdist": ["-n", "2", "--alluredir=allure-results"],
        "epics": ["--alluredir=allure-results", "--allure-epics=isolation"],
    }
    projects = {name: tmp_path_factory.mktemp(f"allure-{name}") for name in names}
    results = run_projects({projects[n]: args for n, args in names.items()}, SUITE_TESTS)
    for project, result in results.items():
        assert result.returncode == pytest.ExitCode.TESTS_FAILED, result.stdout
        assert_valid_report(json.loads((project / ".apex" / "report.json").read_text()))
    return projects


@pytest.fixture
def allure_run(allure_runs: dict[str, Path]) -> Path:
    return allure_runs["single"] / "allure-results"


def test_each_criterion_is_a_step_with_observed_and_threshold(allure_run: Path) -> None:
    steps = _results(allure_run)["test_p95"]["steps"]
    assert [(s["name"], s["status"]) for s in steps] == [
        ("load p95 1.20 s < 2.00 s at 10 users (stage 1/5)", "passed"),
        ("load p95 2.41 s >= 2.00 s at 150 users (stage 5/5)", "failed"),
    ]
    assert {p["name"]: p["value"] for p in steps[1]["parameters"]} == {
        "observed": "2.41 s",
        "threshold": "< 2.00 s",
        "outcome": "fail",
        "stage": "at 150 users (stage 5/5)",
    }
    assert {p["name"]: p["value"] for p in steps[0]["parameters"]}["outcome"] == "pass"


@pytest.mark.parametrize("run", ["single", "xdist"])
def test_an_inconclusive_test_and_its_step_never_read_as_passed(
    allure_runs: dict[str, Path], run: str
) -> None:
    results = _results(allure_runs[run] / "allure-results")
    unjudged = results["test_unjudged"]
    assert unjudged["status"] == "unknown"  # allure-pytest alone says "skipped"
    assert [(s["name"], s["status"]) for s in unjudged["steps"]] == [
        ("isolation cross_user_events 0 <= 0", "passed"),
        (
            "isolation isolation_violations.rows inconclusive (needs <= 0): the database at "
            "postgresql://apex:[REDACTED]@db/apex did not answer",
            "broken",
        ),
    ]
    assert {"name": "apex.outcome", "value": "inconclusive"} in unjudged["labels"]
    # A skip after recording criteria is no plain skip either.
    assert results["test_skips_after_recording"]["status"] == "unknown"


def test_suites_are_epics(allure_run: Path) -> None:
    results = _results(allure_run)
    epics = {
        name: [label["value"] for label in result["labels"] if label["name"] == "epic"]
        for name, result in results.items()
    }
    assert epics == {
        "test_p95": ["load"],
        "test_breaches": ["isolation"],
        "test_unjudged": ["isolation"],
        "test_skips_after_recording": ["isolation"],
        "test_uses_the_target": ["health"],
    }


def test_suites_are_the_top_level_of_the_tree(allure_run: Path) -> None:
    # Allure 3 files a test by its titlePath (allure-pytest: the file's directories first).
    results = _results(allure_run)
    assert results["test_p95"]["titlePath"] == ["load", "test_suites.py"]
    assert results["test_uses_the_target"]["titlePath"] == ["health", "test_suites.py"]
    labels = {(label["name"], label["value"]) for label in results["test_breaches"]["labels"]}
    assert {("parentSuite", "isolation"), ("apex.suite", "isolation")} <= labels


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (["tests", "acceptance", "test_health.py"], ["health", "test_health.py"]),
        (["tests", "test_health.py", "TestLogin"], ["health", "test_health.py", "TestLogin"]),
        (["odd"], ["health", "odd"]),
        ([], ["health"]),
    ],
)
def test_suite_title_path(path: list[str], expected: list[str]) -> None:
    assert allure_report.suite_title_path("health", path) == expected


def test_allure_epics_option_selects_by_suite(allure_runs: dict[str, Path]) -> None:
    # The epic labels exist at collection time, so allure-pytest's own filter sees them.
    assert set(_results(allure_runs["epics"] / "allure-results")) == {
        "test_breaches",
        "test_unjudged",
        "test_skips_after_recording",
    }


def test_environment_properties(allure_run: Path) -> None:
    lines = (allure_run / "environment.properties").read_text().splitlines()
    properties = dict(line.split("=", 1) for line in lines)
    assert properties["profile"] == "ci"
    assert properties["target"] == "compose:apexrun-fake"
    assert properties["image.backend"] == "sha256:feedface"
    assert properties["git.commit"] == "0123456789abcdef"
    assert {"python", "pytest"} <= set(properties)


def test_categories_are_written_and_classify_the_failures(allure_run: Path) -> None:
    categories = json.loads((allure_run / "categories.json").read_text())
    assert [c["name"] for c in categories] == [
        "Isolation breach",
        "SLO breach",
        "Stack failure",
        "Inconclusive",
        "Test defect",
    ]
    results = _results(allure_run)
    assert _category(categories, results["test_breaches"]) == "Isolation breach"
    assert _category(categories, results["test_p95"]) == "SLO breach"
    assert _category(categories, results["test_unjudged"]) == "Inconclusive"


def _category(categories: list[dict[str, Any]], result: dict[str, Any]) -> str | None:
    """The category Allure would pick: the first whose status and (full-match) regex fit."""
    message = result.get("statusDetails", {}).get("message", "")
    for category in categories:
        if result["status"] not in category["matchedStatuses"]:
            continue
        regex = category.get("messageRegex")
        if regex is None or re.fullmatch(regex, message):
            return category["name"]
    return None


@pytest.mark.parametrize(
    ("status", "message", "category"),
    [
        ("failed", "AssertionError: isolation breaches 1 > 0", "Isolation breach"),
        (
            "failed",
            "AssertionError: events of user A leaked to user B\nassert 1 == 0",
            "Isolation breach",
        ),
        (
            "failed",
            "AssertionError: load p95 2.41 s >= 2.00 s at 150 users (stage 5/5)",
            "SLO breach",
        ),
        ("failed", "AssertionError: health availability 0.998 <= 0.999", "SLO breach"),
        ("failed", "AssertionError: rollback error_rate 0.0300 > 0.0200", "SLO breach"),
        (
            "failed",
            "Failed: stack failure: service 'backend' is unhealthy\n  last log lines:",
            "Stack failure",
        ),
        (
            "broken",
            "pytest_apex.targets.errors.StackStartError: compose rejected the file",
            "Stack failure",
        ),
        ("broken", "TypeError: unsupported operand", "Test defect"),
        ("failed", "AssertionError: assert 1 == 2", None),  # a plain product defect
    ],
)
def test_category_rules(status: str, message: str, category: str | None) -> None:
    result = {"status": status, "statusDetails": {"message": message}}
    assert _category(list(allure_report.CATEGORIES), result) == category


def test_attachments_and_step_text_are_redacted(allure_run: Path) -> None:
    text = _all_text(allure_run)
    for secret in ("hunter2", "sekrit-token-abcdefgh", "eyJhbGciOiJIUzI1NiJ9", "sekrit-token-123"):
        assert secret not in text
    assert "[REDACTED]" in text
    # The failed test that used the target got its services' logs attached (redacted too).
    result = _results(allure_run)["test_uses_the_target"]
    names = [a["name"] for a in result["attachments"]]
    assert "backend logs (last 200 lines)" in names
    assert {"stdout", "log"} <= set(names)


def test_nothing_allure_without_alluredir(apex: ApexPytester) -> None:
    apex.pytester.makepyfile(SUITE_TESTS)
    apex.run().assert_outcomes(failed=3, skipped=2)
    assert not list(apex.path.glob("**/environment.properties"))
    assert not list(apex.path.glob("**/categories.json"))


def test_allure_under_xdist_is_written_by_the_controller(allure_runs: dict[str, Path]) -> None:
    project = allure_runs["xdist"]
    results_dir = project / "allure-results"
    assert set(_results(results_dir)) == {
        "test_p95",
        "test_breaches",
        "test_unjudged",
        "test_skips_after_recording",
        "test_uses_the_target",
    }
    assert len(_results(results_dir)["test_p95"]["steps"]) == 2
    properties = (results_dir / "environment.properties").read_text()
    assert "target=compose:apexrun-fake" in properties
    assert (
        json.loads((results_dir / "categories.json").read_text())[0]["name"] == "Isolation breach"
    )
    # Workers never describe the target: only the controller writes the run-level files.
    describers = {e["role"] for e in read_events(project) if e["event"] == "describe"}
    assert describers == {"controller"}
    assert "sekrit-token-abcdefgh" not in _all_text(results_dir)


def test_user_categories_are_kept_ahead_of_ours(tmp_path: Path) -> None:
    mine = {"name": "Flaky network", "messageRegex": ".*reset.*", "matchedStatuses": ["broken"]}
    ours_renamed = {"name": "SLO breach", "matchedStatuses": ["failed"]}
    (tmp_path / "categories.json").write_text(json.dumps([mine, ours_renamed]))
    allure_report.write_categories(tmp_path)
    names = [c["name"] for c in json.loads((tmp_path / "categories.json").read_text())]
    assert names == [
        "Flaky network",
        "Isolation breach",
        "SLO breach",
        "Stack failure",
        "Inconclusive",
        "Test defect",
    ]


def test_environment_values_are_escaped_and_redacted(tmp_path: Path) -> None:
    allure_report.write_environment(
        tmp_path, {"target": "external", "db url": "postgresql://u:pw@db:5432/x\nmore"}
    )
    lines = (tmp_path / "environment.properties").read_text().splitlines()
    # Keys escape separators, values line breaks (Java .properties); the password is gone.
    assert lines == ["db\\ url=postgresql://u:[REDACTED]@db:5432/x\\nmore", "target=external"]


def test_the_environment_names_the_faults_and_the_topology_only_when_set() -> None:
    target = {"target": "compose:x"}
    plain = allure_report.environment(profile="ci", target=target, commit="abc")
    assert "apex.topology" not in plain
    assert "apex.faults" not in plain
    chosen = allure_report.environment(
        profile="ci", target=target, commit="abc", faults=("slow_redis",), topology="two_backends"
    )
    assert (chosen["apex.topology"], chosen["apex.faults"]) == ("two_backends", "slow_redis")


# Skipped on a bare checkout; in CI (CI=true) missing node tools fail instead.
needs_allure = pytest.mark.skipif(
    (not (ROOT / "node_modules" / "allure").is_dir() or not shutil.which("npx"))
    and not os.environ.get("CI"),
    reason="node tools not installed (make setup installs them)",
)


def _allure(*args: str) -> subprocess.CompletedProcess[str]:
    # From the repository root, so allurerc.mjs is the config, as under `make report`.
    return subprocess.run(
        ["npx", "--no-install", "allure", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


@needs_allure
def test_allure3_renders_the_suites_at_the_top_and_the_gate_mirrors_the_verdict(
    allure_run: Path, tmp_path: Path
) -> None:
    report = tmp_path / "allure-report"
    generated = _allure("generate", str(allure_run), "-o", str(report))
    assert generated.returncode == 0, generated.stdout + generated.stderr
    tree = json.loads((report / "widgets" / "tree.json").read_text())
    assert sorted(tree["groupsById"][g]["name"] for g in tree["root"]["groups"]) == [
        "health",
        "isolation",
        "load",
    ]
    gate = _allure("quality-gate", str(allure_run))
    output = re.sub(r"\x1b\[[0-9;]*m", "", gate.stdout + gate.stderr)
    assert gate.returncode == 1, output
    # 3 failed tests, and the 2 inconclusive ones fail the gate by a rule of their own.
    assert "The number of failed tests 3 exceeds" in output
    assert "The number of inconclusive tests 2 exceeds" in output


@needs_allure
def test_the_quality_gate_passes_a_run_that_passed(allure_run: Path, tmp_path: Path) -> None:
    results = tmp_path / "allure-results"
    results.mkdir()
    for path in allure_run.glob("*-result.json"):
        data = json.loads(path.read_text())
        data.update(status="passed", steps=[], statusDetails={})
        (results / path.name).write_text(json.dumps(data))
    gate = _allure("quality-gate", str(results))
    assert gate.returncode == 0, gate.stdout + gate.stderr
