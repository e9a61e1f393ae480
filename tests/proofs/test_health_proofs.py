"""The health suite catches what it claims to: it passes on a clean stack and fails, naming
the service and the check, on each fault it is responsible for (unready_db, shared_context,
slow_responses, weak_jwt, open_cors, root_user) and on a paused or stopped service; against
a target where nothing answers, no criterion passes."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from typing import Final

import httpx
import pytest

from tests.conftest import COMPOSE_FILE, FaultStack, concurrent_agent_runs
from tests.proofs.conftest import HEALTH_SUITE, attach_to, failed_criteria, outcomes, run_suite

pytestmark = pytest.mark.xdist_group("fault-stack")


def test_health_suite_passes_on_the_clean_stack(
    pytester: pytest.Pytester, fault_stack: FaultStack
) -> None:
    result, report = run_suite(pytester, HEALTH_SUITE, fault_stack.suite_urls(), ["-m", "health"])

    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    assert report["verdict"] == "pass", failed_criteria(report)
    assert len(report["criteria"]) >= 10, report["criteria"]
    names = {c["name"] for c in report["criteria"]}
    # The checks that the fault proofs below rely on ran and passed here.
    assert {
        "backend.readiness",
        "backend.readiness.postgres",
        "backend.liveness",
        "backend.health_response",
        "jwt_genuine.ws_accepted",
        "jwt_alg-none.rest_rejected",
        "jwt_alg-none.ws_rejected",
        "jwt_wrong-signature.ws_rejected",
        "auth.cors.foreign_origins_refused",
        "backend.cors.foreign_origins_refused",
    } <= names


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
        # Runs whose events went astray never end: 8 s is past a clean run's second.
        asyncio.run(concurrent_agent_runs(urls, users=10, timeout=8))
        result, report = run_suite(pytester, HEALTH_SUITE, urls, ["-m", "health"])
    finally:
        fault_stack.reset_data()

    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()
    failed = {c["name"] for c in failed_criteria(report)}
    assert "isolation_violations.rows" in failed, failed
    result.stdout.fnmatch_lines(["*health isolation_violations.rows * > 0*"])


def _failed(report: dict) -> set[str]:
    return {name for name, outcome in outcomes(report).items() if outcome == "fail"}


def test_health_suite_fails_on_slow_responses_naming_the_backends_health_response(
    pytester: pytest.Pytester, fault_stack: FaultStack
) -> None:
    result, report = run_suite(
        pytester,
        HEALTH_SUITE,
        fault_stack.suite_urls("slow_responses"),
        ["-m", "health", "-k", "live or ready or answer_within"],
    )

    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()
    assert report["verdict"] == "fail"
    # Slow, not down: only the response time fails; liveness and readiness still pass.
    assert _failed(report) == {"backend.health_response"}, outcomes(report)
    result.stdout.fnmatch_lines(
        ["*health backend.health_response 1.0? s > 0.500 s: *health/ready: no answer within 1 s*"]
    )


@pytest.mark.parametrize("kind", ["alg-none", "wrong-signature"])
def test_health_suite_fails_on_weak_jwt_naming_the_token_and_each_route(
    pytester: pytest.Pytester, fault_stack: FaultStack, kind: str
) -> None:
    result, report = run_suite(
        pytester,
        HEALTH_SUITE,
        fault_stack.suite_urls("weak_jwt"),
        ["-m", "health", "-k", f"token and ({kind} or genuine)"],
    )

    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()
    assert _failed(report) == {f"jwt_{kind}.rest_rejected", f"jwt_{kind}.ws_rejected"}, outcomes(
        report
    )
    assert outcomes(report)["jwt_genuine.ws_accepted"] == "pass"  # the controls held
    result.stdout.fnmatch_lines(
        [
            f"*health jwt_{kind}.rest_rejected 0 != 2: backend /api/threads: *: 200; "
            "auth /auth/me: *: 200*",
            f"*health jwt_{kind}.ws_rejected 0 != 2: websocket: subprotocol: accepted*",
        ]
    )


def test_health_suite_fails_on_open_cors_naming_each_service(
    pytester: pytest.Pytester, fault_stack: FaultStack
) -> None:
    result, report = run_suite(
        pytester, HEALTH_SUITE, fault_stack.suite_urls("open_cors"), ["-m", "health", "-k", "cors"]
    )

    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()
    assert _failed(report) == {
        "auth.cors.foreign_origins_refused",
        "backend.cors.foreign_origins_refused",
    }, outcomes(report)
    result.stdout.fnmatch_lines(
        [
            "*health backend.cors.foreign_origins_refused 0 != 8: backend /api/threads: "
            "OPTIONS from https://evil.example: 200, Access-Control-Allow-Origin https://evil.example*"
        ]
    )


def test_health_suite_fails_on_root_user_naming_each_root_service(
    pytester: pytest.Pytester, fault_stack: FaultStack
) -> None:
    fault_stack.switch("root_user")
    try:
        result, report = run_suite(
            pytester,
            HEALTH_SUITE,
            {},
            ["-m", "health", "-k", "non_root", *attach_to(pytester, fault_stack.target)],
        )
    finally:
        fault_stack.switch()

    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()
    assert _failed(report) == {"backend.non_root", "auth.non_root"}, outcomes(report)
    assert outcomes(report)["postgres.non_root"] == "pass"
    # In whichever order the containers are listed.
    result.stdout.fnmatch_lines(["*health backend.non_root 0 != 1: user 0:1000*"])
    result.stdout.fnmatch_lines(["*health auth.non_root 0 != 1: user root:staff*"])


# A plugin for the child run: the Apex adapter with its socket moved to a path the backend
# does not serve, which answers every upgrade, the genuine token's too, with HTTP 403.
# Registered last (trylast configure), so its apex_adapter overrides the plugin's.
_LOST_SOCKET_PLUGIN = """
import pytest

from pytest_apex.adapters.apex import ApexAdapter


class LostSocket:
    @pytest.fixture
    async def apex_adapter(self, apex_endpoints):
        moved = {**apex_endpoints, "backend": apex_endpoints["backend"] + "/nowhere"}
        adapter = ApexAdapter(moved)
        yield adapter
        await adapter.aclose()


@pytest.hookimpl(trylast=True)
def pytest_configure(config):
    config.pluginmanager.register(LostSocket(), "lost-socket")
"""


def test_a_socket_path_that_refuses_the_genuine_token_too_proves_no_rejection(
    pytester: pytest.Pytester, fault_stack: FaultStack
) -> None:
    """403 from an unknown WebSocket path is no "forged token rejected": the genuine token
    is refused there too, so the criterion is inconclusive, while REST, whose control got
    in, still proves its refusal."""
    pytester.makepyfile(apex_lost_socket=_LOST_SOCKET_PLUGIN)
    result, report = run_suite(
        pytester,
        HEALTH_SUITE,
        fault_stack.suite_urls(),
        ["-m", "health", "-k", "bad_token and alg-none", "-p", "apex_lost_socket"],
    )

    assert report["verdict"] == "inconclusive", outcomes(report)
    assert outcomes(report) == {
        "jwt_alg-none.rest_rejected": "pass",
        "jwt_alg-none.ws_rejected": "inconclusive",
    }
    result.stdout.fnmatch_lines(
        [
            "*health jwt_alg-none.ws_rejected inconclusive *: websocket: the control did not "
            "get in (subprotocol: upgrade refused with HTTP 403)*"
        ]
    )


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1.0).is_success
    except httpx.HTTPError:
        return False


@pytest.fixture
def backend_out_of_service(
    fault_stack: FaultStack, request: pytest.FixtureRequest
) -> Iterator[dict[str, str]]:
    """The backend paused (peers hang) or stopped (peers are refused), and restored after;
    yields the suite URLs taken while it still served."""
    urls = fault_stack.suite_urls()
    target = fault_stack.target
    if request.param == "pause":
        target.pause("backend")
        try:
            yield urls
        finally:
            target.unpause("backend")
        deadline = time.monotonic() + 60
        while not _answers(urls["backend"] + "/health/live"):
            assert time.monotonic() < deadline, "the backend did not answer after unpause"
            time.sleep(0.2)  # polling interval of a condition with a deadline
        return
    backend = next(c for c in target.containers() if c.service == "backend")
    subprocess.run(
        ["docker", "stop", "--time", "5", backend.container_id],
        check=True,
        capture_output=True,
        timeout=60,
    )
    try:
        yield urls
    finally:
        # A fresh container, healthy before this returns (`up --wait`), on a new port.
        target.recreate(("backend",), {})


@pytest.mark.parametrize("backend_out_of_service", ["pause", "stop"], indirect=True)
def test_health_suite_fails_liveness_and_health_response_of_a_backend_out_of_service(
    pytester: pytest.Pytester, backend_out_of_service: dict[str, str]
) -> None:
    result, report = run_suite(
        pytester,
        HEALTH_SUITE,
        backend_out_of_service,
        ["-m", "health", "-k", "live or answer_within"],
    )

    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()
    assert _failed(report) == {"backend.liveness", "backend.health_response"}, outcomes(report)
    assert outcomes(report)["auth.liveness"] == "pass"  # precise: only the backend is blamed
    result.stdout.fnmatch_lines(
        [
            "*health backend.liveness 0 != 1: *",
            # The probe gives up after 1 s; on a busy machine its time reads a little more.
            "*health backend.health_response * s > 0.500 s: *: no answer within 1 s*",
        ]
    )


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
    for service in ("postgres", "redis", "migrate", "auth", "backend", "frontend", "prometheus"):
        assert {f"{service}.non_root", f"{service}.compose_health"} <= names, service

    project = report["target"].removeprefix("compose:")
    # Projects are named apexrun-<controller pid>-<id>: any other project with this run's pid
    # would be a second stack of the same run (other tests' stacks carry other pids).
    run_pid = project.split("-")[1]
    same_run = {p for p in created if p.startswith(f"apexrun-{run_pid}-")}
    assert same_run == {project}, f"the run created {sorted(same_run)}; events: {created}"
    assert created.count(project) == 7, created  # one container per service, created once

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
