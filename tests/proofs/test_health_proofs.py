"""The health suite catches what it claims to: it passes on a clean stack and fails, naming
the readiness check and the dependency, when the backend reports PostgreSQL unready."""

from __future__ import annotations

import asyncio
import subprocess
from typing import Final

import pytest

from tests.conftest import COMPOSE_FILE, FaultStack, concurrent_agent_runs
from tests.proofs.conftest import HEALTH_SUITE, failed_criteria, run_suite

pytestmark = pytest.mark.xdist_group("fault-stack")


def test_health_suite_passes_on_the_clean_stack(
    pytester: pytest.Pytester, fault_stack: FaultStack
) -> None:
    result, report = run_suite(pytester, HEALTH_SUITE, fault_stack.suite_urls(), ["-m", "health"])

    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    assert report["verdict"] == "pass", failed_criteria(report)
    assert len(report["criteria"]) >= 10, report["criteria"]
    names = {c["name"] for c in report["criteria"]}
    # The checks that the unready_db proof relies on ran and passed here.
    assert {"backend.readiness", "backend.readiness.postgres"} <= names


def test_health_suite_fails_on_unready_db_naming_readiness_and_postgres(
    pytester: pytest.Pytester, fault_stack: FaultStack
) -> None:
    result, report = run_suite(
        pytester, HEALTH_SUITE, fault_stack.suite_urls("unready_db"), ["-m", "health"]
    )

    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()
    assert report["verdict"] == "fail"
    failed = {c["name"] for c in failed_criteria(report)}
    assert "backend.readiness.postgres" in failed, failed
    # Precise, not noisy: only readiness failed (liveness still passes, the database itself
    # is fine), for every service whose readiness needs PostgreSQL, and Redis, which did not
    # fail, is not blamed.
    readiness = {f"{s}.readiness{d}" for s in ("backend", "auth") for d in ("", ".postgres")}
    assert failed <= readiness, failed - readiness
    assert result.parseoutcomes()["failed"] == 1, result.stdout.str()
    result.stdout.fnmatch_lines(
        ["*health backend.readiness.postgres 0 != 1: postgres check fail*postgres:responseTime*"]
    )


def test_health_suite_fails_on_shared_context_naming_isolation_violations(
    pytester: pytest.Pytester, fault_stack: FaultStack
) -> None:
    """After concurrent runs under a shared execution context the database holds one agent
    instance under many users; the data-layer check must name it."""
    urls = fault_stack.suite_urls("shared_context")
    try:
        asyncio.run(concurrent_agent_runs(urls, users=10))
        result, report = run_suite(pytester, HEALTH_SUITE, urls, ["-m", "health"])
    finally:
        fault_stack.reset_data()

    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()
    failed = {c["name"] for c in failed_criteria(report)}
    assert "isolation_violations.rows" in failed, failed
    result.stdout.fnmatch_lines(["*health isolation_violations.rows * > 0*"])


@pytest.mark.integration
def test_health_suite_passes_in_full_on_a_compose_target_with_one_stack_for_four_workers(
    pytester: pytest.Pytester,
) -> None:
    """The whole suite, container checks included, as a user runs it: `pytest -n 4 -m health`
    against the reference compose file. Exactly one compose project is created for the four
    workers, the Allure environment names its images, and nothing is left running."""
    allure_dir = pytester.path / "allure-results"
    # Streamed live: the engine keeps only the last few hundred events, and health checks
    # every second push container creations out of `docker events --since` within seconds.
    watcher = subprocess.Popen(
        [
            "docker",
            "events",
            "--filter",
            "type=container",
            "--filter",
            "event=create",
            "--format",
            '{{index .Actor.Attributes "com.docker.compose.project"}}',
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        result, report = run_suite(
            pytester,
            HEALTH_SUITE,
            {},
            [
                "-m",
                "health",
                "-n",
                "4",
                f"--apex-stack={COMPOSE_FILE}",
                f"--alluredir={allure_dir}",
            ],
        )
    finally:
        watcher.terminate()
        created = watcher.communicate(timeout=30)[0].split()
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    assert report["verdict"] == "pass", failed_criteria(report)
    names = {c["name"] for c in report["criteria"]}
    for service in ("postgres", "redis", "auth", "backend", "frontend"):
        assert {f"{service}.non_root", f"{service}.compose_health"} <= names, service

    project = report["target"].removeprefix("compose:")
    # Projects are named apexrun-<controller pid>-<id>: any other project with this run's pid
    # would be a second stack of the same run (other tests' stacks carry other pids).
    run_pid = project.split("-")[1]
    same_run = {p for p in created if p.startswith(f"apexrun-{run_pid}-")}
    assert same_run == {project}, f"the run created {sorted(same_run)}; events: {created}"
    assert created.count(project) == 5, created  # one container per service, created once

    left = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={project}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split()
    assert not left, f"containers of {project} left after the run: {left}"

    environment = (allure_dir / "environment.properties").read_text()
    assert f"target=compose:{project}" in environment
    assert "image.backend=sha256:" in environment, environment


NOBODY: Final = "http://127.0.0.1:9"  # the discard port on loopback: every connection is refused


def test_health_suite_never_passes_a_target_where_nothing_answers(
    pytester: pytest.Pytester,
) -> None:
    """`pytest -m health --apex-url backend=... --apex-url auth=...` at a port where nothing
    listens: no criterion may pass (a refused connection is no fast answer, an empty list
    of answers is no proof), and the verdict is fail or inconclusive, never pass."""
    result, report = run_suite(
        pytester, HEALTH_SUITE, {"backend": NOBODY, "auth": NOBODY}, ["-m", "health"]
    )

    assert result.ret != pytest.ExitCode.OK, result.stdout.str()
    assert report["verdict"] in ("fail", "inconclusive"), report
    passed = [c["name"] for c in report["criteria"] if c["outcome"] == "pass"]
    assert not passed, f"criteria passed against a target that never answered: {passed}"
    failed = {c["name"] for c in failed_criteria(report)}
    assert {"backend.liveness", "auth.liveness"} <= failed, failed
