"""Integration: the stack lifecycle against a real Docker engine (skipped without one).

Each test runs pytest in a subprocess on a tiny test file that uses `apex_endpoints`, and
then looks at Docker itself: what came up, what was left behind. Stacks are small local
ones from tests/plugin/stacks/ (copied into the test's directory, so every project this
file creates is recognisable by its compose file), except for the reference-stack
bring-up. Waits are conditions with deadlines, never fixed sleeps.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from pytest_apex.targets.identity import RunIdentity
from pytest_apex.targets.projects import label_override

ROOT = Path(__file__).resolve().parents[2]
STACKS = Path(__file__).with_name("stacks")
REFERENCE_STACK = ROOT / "fixtures" / "stack" / "docker-compose.staging.yml"
LOCAL_IMAGES = ("apex-stack/redis:staging", "apex-stack/app:staging")
PROJECT_LABEL = "com.docker.compose.project"


def _docker_ready() -> str:
    """Why the integration tests cannot run here ("" when they can)."""
    if shutil.which("docker") is None:
        return "no docker CLI"
    try:
        engine = subprocess.run(["docker", "version"], capture_output=True, timeout=30)
        images = subprocess.run(
            ["docker", "image", "inspect", *LOCAL_IMAGES], capture_output=True, timeout=30
        )
    except subprocess.TimeoutExpired:
        return "the Docker engine does not answer"
    if engine.returncode != 0:
        return "no Docker engine running"
    if images.returncode != 0:
        return f"images {', '.join(LOCAL_IMAGES)} not built (make setup)"
    return ""


_NOT_READY = _docker_ready()
# Read at import: the tests' inner runs must not see themselves as xdist workers, so the
# worker's variables may be gone from the environment by the time a test runs.
UNDER_XDIST = "PYTEST_XDIST_WORKER" in os.environ

pytestmark = [
    pytest.mark.integration,
    # Skipped on a developer machine without Docker; in CI (CI=true) a missing engine fails.
    pytest.mark.skipif(
        bool(_NOT_READY) and not os.environ.get("CI"),
        reason=f"integration test needs Docker: {_NOT_READY}",
    ),
    # One worker runs them all: they share the engine and are timed against each other.
    pytest.mark.xdist_group("stack-lifecycle"),
]

# The test that the inner runs execute: it records which project it got.
USES_THE_STACK = """
import json, os
from pathlib import Path

def test_uses_the_stack(apex_target, apex_endpoints):
    out = Path(os.environ["APEX_TEST_OUT"])
    out.mkdir(exist_ok=True)
    record = {"target": apex_target.name, "endpoints": apex_endpoints}
    (out / f"{os.getpid()}-{os.urandom(4).hex()}.json").write_text(json.dumps(record))
"""


# --- helpers ----------------------------------------------------------------------------------


def _docker(*args: str) -> str:
    result = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=120, check=False
    )
    return result.stdout


def containers_of(project: str) -> list[str]:
    return _docker("ps", "--all", "--quiet", "--filter", f"label={PROJECT_LABEL}={project}").split()


def projects_of(compose_file: Path) -> set[str]:
    """Compose projects (any state) started from this compose file."""
    listing = json.loads(_docker("compose", "ls", "--all", "--format", "json") or "[]")
    return {
        p["Name"] for p in listing if str(compose_file) in str(p.get("ConfigFiles", "")).split(",")
    }


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


def assert_gone(project: str, timeout: float = 30.0) -> None:
    wait_for(lambda: not containers_of(project), timeout, f"no container of {project}")


def records(directory: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))]


class Project:
    """A test's directory: the compose file it uses, its ini, and a safety net that removes
    whatever project of that compose file a failing test leaves behind."""

    def __init__(self, pytester: pytest.Pytester, stack: Path, tmp_copy: bool = True) -> None:
        self.pytester = pytester
        self.path = pytester.path
        if tmp_copy:
            # A copy per test: its absolute path tells this test's projects from all others.
            self.compose_file = self.path / "stack" / stack.name
            self.compose_file.parent.mkdir()
            shutil.copy(stack, self.compose_file)
        else:
            self.compose_file = stack
        self.out = self.path / "out"
        pytester.makeini(
            f"""
            [pytest]
            apex_stack = {self.compose_file}
            asyncio_default_fixture_loop_scope = function
            """
        )

    def run(self, *args: str, timeout: float = 240) -> pytest.RunResult:
        return self.pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=timeout)

    def targets(self) -> set[str]:
        return {str(r["target"]) for r in records(self.out)}

    def cleanup(self) -> None:
        if self.compose_file.is_relative_to(self.path):
            for name in projects_of(self.compose_file):
                _docker("compose", "-p", name, "down", "--volumes", "--timeout", "2")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # The inner runs are top-level pytest runs, whatever the outer one is (e.g. an xdist
    # worker); they write their records where the test says.
    for name in list(os.environ):
        if name.startswith(("PYTEST_", "APEX_")):
            monkeypatch.delenv(name)


@pytest.fixture
def small(
    pytester: pytest.Pytester, clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Project]:
    project = Project(pytester, STACKS / "small.yml")
    monkeypatch.setenv("APEX_TEST_OUT", str(project.out))
    pytester.makepyfile(test_stack=USES_THE_STACK)
    yield project
    project.cleanup()


def _project_of(target: str) -> str:
    assert target.startswith("compose:"), target
    return target.removeprefix("compose:")


# --- (1) bring-up -----------------------------------------------------------------------------


def test_the_reference_stack_comes_up_healthy_and_reachable(
    pytester: pytest.Pytester, clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = Project(pytester, REFERENCE_STACK, tmp_copy=False)
    monkeypatch.setenv("APEX_TEST_OUT", str(project.out))
    pytester.makepyfile(
        test_stack=USES_THE_STACK
        + """

import socket
import urllib.request
from urllib.parse import urlsplit

def test_every_service_answers(apex_endpoints):
    assert set(apex_endpoints) == {"frontend", "backend", "auth", "postgres", "redis", "prometheus"}
    for service in ("frontend", "backend", "auth"):
        with urllib.request.urlopen(apex_endpoints[service] + "/health", timeout=10) as reply:
            assert reply.status == 200, service
    for service, scheme in (("postgres", "postgresql"), ("redis", "redis")):
        url = urlsplit(apex_endpoints[service])
        assert url.scheme == scheme
        socket.create_connection((url.hostname, url.port), timeout=10).close()
"""
    )
    result = project.run("-v", timeout=600)
    output = result.stdout.str() + result.stderr.str()
    result.assert_outcomes(passed=2)
    (target,) = project.targets()
    name = _project_of(target)
    assert re.fullmatch(r"apexrun-\d+-[0-9a-f]{6}", name)
    (record,) = records(project.out)
    assert {urlsplit(url).hostname for url in record["endpoints"].values()} == {"127.0.0.1"}
    # Progress: each service's state changes, live (not in a captured-output section).
    for service in ("postgres", "redis", "auth", "backend", "frontend", "prometheus"):
        assert re.search(rf"\[apex\]   {service}: \S+ -> healthy", output), service
    assert f"[apex] stack {name} healthy in" in output
    assert "Captured stderr setup" not in output
    # And it is gone after the run.
    assert f"[apex] stack {name} removed" in output
    assert_gone(name)


# --- (2) never healthy ------------------------------------------------------------------------


def test_a_service_that_never_gets_healthy_errors_with_its_logs_and_is_removed(
    pytester: pytest.Pytester, clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = Project(pytester, STACKS / "never-healthy.yml")
    monkeypatch.setenv("APEX_TEST_OUT", str(project.out))
    pytester.makepyfile(test_stack=USES_THE_STACK)
    try:
        result = project.run()
        output = result.stdout.str()
        result.assert_outcomes(errors=1)
        match = re.search(r"stack failure: stack (apexrun-\d+-[0-9a-f]+) \(", output)
        assert match, output
        name = match.group(1)
        assert "service 'stuck' is unhealthy" in output
        assert "exit 1: probe-says-not-ready" in output  # its health-check output
        assert "Ready to accept connections" in output  # its log lines
        assert f"container {name}-stuck-1 is unhealthy" in output  # what compose said
        assert_gone(name)
        assert not projects_of(project.compose_file)
    finally:
        project.cleanup()


# --- (3) keep, then reuse ---------------------------------------------------------------------


def test_keep_leaves_the_stack_running_and_reuse_attaches_to_it(small: Project) -> None:
    kept = ""
    try:
        first = small.run("--apex-keep")
        first.assert_outcomes(passed=1)
        (target,) = small.targets()
        kept = _project_of(target)
        assert kept.startswith("apexkeep-")
        output = first.stdout.str() + first.stderr.str()
        assert f"stack {kept} kept running" in output
        assert f"docker compose -p {kept} down --volumes" in output
        assert re.search(r"web\s+http://127\.0\.0\.1:\d+", output)
        assert containers_of(kept)
        assert projects_of(small.compose_file) == {kept}

        second = small.run("--apex-reuse")
        second.assert_outcomes(passed=1)
        assert small.targets() == {target}  # both runs used the kept stack
        assert f"reusing running stack {kept}" in second.stdout.str() + second.stderr.str()
        assert projects_of(small.compose_file) == {kept}  # no new project
        assert containers_of(kept)  # and it is still running
    finally:
        if kept:
            _docker("compose", "-p", kept, "down", "--volumes", "--timeout", "2")
            assert_gone(kept)


# --- (4) xdist ---------------------------------------------------------------------------------

XDIST_TESTS = """
import json, os, subprocess, time
from pathlib import Path

import pytest

@pytest.mark.parametrize("n", range(6))
def test_shares_the_stack(apex_target, apex_endpoints, n):
    out = Path(os.environ["APEX_TEST_OUT"])
    out.mkdir(exist_ok=True)
    listing = subprocess.run(
        ["docker", "compose", "ls", "--all", "--format", "json"],
        capture_output=True, text=True, check=True,
    ).stdout
    mine = sorted(
        p["Name"] for p in json.loads(listing or "[]")
        if os.environ["APEX_COMPOSE_FILE"] in p.get("ConfigFiles", "").split(",")
    )
    record = {
        "target": apex_target.name,
        "projects": mine,
        "worker": os.environ.get("PYTEST_XDIST_WORKER", "main"),
    }
    (out / f"{n}.json").write_text(json.dumps(record))
"""


def test_xdist_workers_share_exactly_one_project(
    small: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APEX_COMPOSE_FILE", str(small.compose_file))
    small.pytester.makepyfile(test_stack=XDIST_TESTS)
    result = small.run("-n", "2")
    result.assert_outcomes(passed=6)
    seen = records(small.out)
    assert len(seen) == 6
    (target,) = {r["target"] for r in seen}
    name = _project_of(str(target))
    assert name.startswith("apexrun-")
    # Every test, on either worker, saw this one project of the compose file and no other.
    assert {tuple(r["projects"]) for r in seen} == {(name,)}
    assert {r["worker"] for r in seen} == {"gw0", "gw1"}
    # The bring-up progress of the worker that started it reaches the terminal.
    assert f"[apex] stack {name} healthy in" in result.stderr.str()
    assert_gone(name)
    assert not projects_of(small.compose_file)


# --- stale stacks -----------------------------------------------------------------------------


def labelled(project: Project, name: str, owner: RunIdentity) -> list[str]:
    """`docker compose` arguments that start the small stack as `name`, labelled as `owner`'s."""
    override = project.path / f"{name}.labels.json"
    override.write_text(label_override(["cache", "web"], owner.labels()))
    return ["docker", "compose", "-p", name, "-f", str(project.compose_file), "-f", str(override)]


def test_a_run_removes_the_stack_a_crashed_run_left_and_only_that(small: Project) -> None:
    # A stand-in for a run that crashes with its stack up: alive while the stack starts
    # (so no concurrent run reaps it early), killed once it is up.
    doomed = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    crashed = f"apexrun-{doomed.pid}-dead00"
    alive = f"apexrun-{os.getpid()}-a11ve0"  # this process lives on: a run still going
    # Dead too, but started in another pid namespace (a CI container sharing the engine).
    foreign = f"apexrun-{doomed.pid}-f0f0f0"
    owners = {
        crashed: RunIdentity.of_process(doomed.pid, crashed),
        alive: RunIdentity.of_process(os.getpid(), alive),
        foreign: dataclasses.replace(
            RunIdentity.of_process(doomed.pid, foreign), pid_namespace="pid:[4026532999]"
        ),
    }
    ups = [
        subprocess.Popen(
            [*labelled(small, name, owner), "up", "-d", "--wait"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for name, owner in owners.items()
    ]
    try:
        assert [up.wait(timeout=120) for up in ups] == [0, 0, 0]
        doomed.kill()
        doomed.wait(timeout=30)
        result = small.run()
        result.assert_outcomes(passed=1)
        output = result.stdout.str() + result.stderr.str()
        # Every run of this host reaps at its start: beside another xdist worker starting
        # stacks of its own, that run may be the one to remove it, and says so in its output.
        beside_others = UNDER_XDIST
        if f"removing stack {crashed}" in output or not beside_others:
            assert (
                f"removing stack {crashed} left behind by a crashed run: "
                f"its run (pid {doomed.pid}) is gone"
            ) in output
        assert_gone(crashed)
        assert alive not in output
        assert containers_of(alive)
        assert foreign not in output
        assert containers_of(foreign)
    finally:
        doomed.kill()
        doomed.wait(timeout=30)
        for name in owners:
            _docker("compose", "-p", name, "down", "--volumes", "--timeout", "2")
        assert_gone(alive)
        assert_gone(foreign)


# --- (5) interrupts ---------------------------------------------------------------------------

BLOCKS = """
import os, time
from pathlib import Path

def test_blocks(apex_target):
    out = Path(os.environ["APEX_TEST_OUT"])
    out.mkdir(exist_ok=True)
    (out / "up.txt").write_text(apex_target.name)
    deadline = time.monotonic() + 120  # bounded, in case nobody interrupts us
    while not (out / "release.txt").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
"""


class Inner:
    """A pytest subprocess whose output is read as it comes, so a test can wait on it."""

    def __init__(self, pytester: pytest.Pytester, *args: str) -> None:
        command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-s", *args]
        self.proc: subprocess.Popen[str] = pytester.popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for_output(self, pattern: str, timeout: float) -> re.Match[str]:
        found: list[re.Match[str]] = []

        def seen() -> bool:
            match = re.search(pattern, self.output)
            if match:
                found.append(match)
            elif self.proc.poll() is not None:
                raise AssertionError(f"pytest exited before {pattern!r}:\n{self.output}")
            return bool(match)

        wait_for(seen, timeout, f"{pattern!r} in the output")
        return found[0]

    def finish(self, timeout: float) -> int:
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"pytest did not exit after the signal:\n{self.output}") from None
        self._reader.join(timeout=10)
        return code


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupted_run_removes_its_stack(small: Project, signum: signal.Signals) -> None:
    small.pytester.makepyfile(test_stack=BLOCKS)
    inner = Inner(small.pytester)
    try:
        up = small.out / "up.txt"
        wait_for(lambda: up.exists() or inner.proc.poll() is not None, 120, "the stack to be up")
        assert up.exists(), inner.output
        name = _project_of(up.read_text())
        assert containers_of(name)
        inner.proc.send_signal(signum)
        code = inner.finish(timeout=60)
        assert code == pytest.ExitCode.INTERRUPTED, inner.output
        assert f"[apex] stack {name} removed" in inner.output
        assert_gone(name)
        assert not projects_of(small.compose_file)
    finally:
        if inner.proc.poll() is None:
            inner.proc.kill()


def test_a_run_interrupted_during_bring_up_removes_what_was_created(
    pytester: pytest.Pytester, clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A stack that stays "starting" for a minute: the signal lands while `up --wait` runs.
    project = Project(pytester, STACKS / "never-healthy.yml")
    monkeypatch.setenv("APEX_TEST_OUT", str(project.out))
    monkeypatch.setenv("APEX_STUCK_RETRIES", "60")
    pytester.makepyfile(test_stack=BLOCKS)
    inner = Inner(pytester)
    try:
        match = inner.wait_for_output(r"\[apex\]   stuck: \S+ -> starting", 60)
        assert match
        started = re.search(r"starting stack (apexrun-\d+-[0-9a-f]+)", inner.output)
        assert started, inner.output
        name = started.group(1)
        assert containers_of(name)
        inner.proc.send_signal(signal.SIGTERM)
        code = inner.finish(timeout=60)
        assert code == pytest.ExitCode.INTERRUPTED, inner.output
        assert not (project.out / "up.txt").exists()
        assert_gone(name)
        assert not projects_of(project.compose_file)
    finally:
        if inner.proc.poll() is None:
            inner.proc.kill()
        project.cleanup()


def test_endpoints_are_on_loopback(small: Project) -> None:
    # The small stack publishes "127.0.0.1::PORT"; the endpoint must say so and answer.
    small.run().assert_outcomes(passed=1)
    (record,) = records(small.out)
    endpoints = record["endpoints"]
    assert set(endpoints) == {"cache", "web"}
    assert str(endpoints["cache"]).startswith("redis://127.0.0.1:")
    web = urlsplit(str(endpoints["web"]))
    assert (web.scheme, web.hostname) == ("http", "127.0.0.1")
    assert web.port
    # Removed at the end of the run, so nothing answers there any more.
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((web.hostname, web.port), timeout=2).close()
