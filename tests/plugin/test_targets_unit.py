"""The stack lifecycle without Docker: every docker command goes to a scripted fake runner.

Covers project naming and stale-stack reaping, the start-failure diagnosis, Docker being
missing, down or hung, endpoint parsing, container inspection, and `TargetSession`: one
start per run across workers, teardown (also after an interrupted or failed start, and
under the start lock), --apex-keep / --apex-reuse, SIGTERM and the private state directory.
The same paths against a real engine are in test_stack_lifecycle.py.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from filelock import FileLock
from testcontainers.compose import ComposeContainer

from pytest_apex import fixtures
from pytest_apex.fixtures import _containers_or_skip
from pytest_apex.reference import PORT_SCHEMES, reference_description
from pytest_apex.settings import ApexSettings
from pytest_apex.targets import compose, lifecycle, reaping
from pytest_apex.targets.base import ServedBy
from pytest_apex.targets.compose import ComposeTarget, _container_info, _endpoints_of
from pytest_apex.targets.errors import (
    CommandTimedOut,
    ContainerQueryError,
    DockerUnavailable,
    ServiceDiagnosis,
    StackStartError,
)
from pytest_apex.targets.external import ExternalTarget
from pytest_apex.targets.identity import RunIdentity
from pytest_apex.targets.lifecycle import TargetSession
from pytest_apex.targets.projects import kept_project_for, new_project_name
from pytest_apex.targets.reaping import reap_stale, stale_projects
from pytest_apex.targets.runner import SubprocessRunner
from pytest_apex.targets.state import RunState

Response = subprocess.CompletedProcess[bytes]
Handler = Callable[[list[str]], Response | None]

LIVE_PID, DEAD_PID = 4242, 999_999


def _done(args: Sequence[str], rc: int = 0, out: str = "", err: str = "") -> Response:
    return subprocess.CompletedProcess(list(args), rc, out.encode(), err.encode())


class FakeDocker:
    """A scripted `CommandRunner`: the last rule whose words all appear in the command (in
    order) answers it; every call is recorded. By default it is a healthy engine with no
    projects, where `up` succeeds and `ps` shows the `services` given."""

    def __init__(self, services: Sequence[dict[str, Any]] = ()) -> None:
        self.calls: list[list[str]] = []
        self.envs: list[dict[str, str]] = []
        self.timeouts: list[float | None] = []
        self._rules: list[tuple[tuple[str, ...], Handler]] = []
        self._lock = threading.Lock()
        self.on("docker", "version", out="26.1.5\n")
        self.on("compose", "version", out="2.26.1\n")
        self.on("compose", "ls", out="[]\n")
        self.on("compose", "ps", out="\n".join(json.dumps(s) for s in services))
        self.on("docker", "ps", "--all", "--quiet", out="")
        self.on("docker", "ps", "--all", "--format", out="")  # no stack carries our labels
        self.on("config", "--services", out="\n".join(str(s["Service"]) for s in services))
        self.on("docker", "run", rc=125, err="no watchdog in the fakes")

    def on(
        self,
        *words: str,
        rc: int = 0,
        out: str = "",
        err: str = "",
        do: Handler | None = None,
    ) -> FakeDocker:
        handler = do or (lambda args: _done(args, rc, out, err))
        self._rules.append((words, handler))
        return self

    def __call__(
        self,
        args: Sequence[str],
        *,
        cwd: str | None = None,
        env: Any = None,
        timeout: float | None = None,
    ) -> Response:
        command = list(args)
        with self._lock:  # the state watcher polls from its own thread
            self.calls.append(command)
            self.envs.append(dict(env or {}))
            self.timeouts.append(timeout)
        for words, handler in reversed(self._rules):
            if _in_order(words, command):
                response = handler(command)
                if response is not None:
                    return response
        return _done(command)

    def ran(self, *words: str) -> list[list[str]]:
        with self._lock:
            return [c for c in self.calls if _in_order(words, c)]


def _in_order(words: Sequence[str], command: Sequence[str]) -> bool:
    rest = iter(command)
    return all(word in rest for word in words)


def ps_entry(
    service: str,
    *,
    state: str = "running",
    health: str = "healthy",
    publishers: Sequence[dict[str, Any]] = (),
    exit_code: int = 0,
) -> dict[str, Any]:
    return {
        "ID": f"id-{service}",
        "Service": service,
        "State": state,
        "Health": health,
        "ExitCode": exit_code,
        "Publishers": list(publishers),
    }


def published(port: int, host_port: int, url: str = "127.0.0.1") -> dict[str, Any]:
    return {"URL": url, "TargetPort": port, "PublishedPort": host_port, "Protocol": "tcp"}


HEALTHY = [
    ps_entry("backend", publishers=[published(8000, 49153)]),
    ps_entry("redis", publishers=[published(6379, 49154)]),
]


@pytest.fixture
def compose_file(tmp_path: Path) -> Path:
    path = tmp_path / "stack" / "docker-compose.yml"
    path.parent.mkdir()
    path.write_text("services: {}\n", encoding="utf-8")
    return path


@pytest.fixture
def state_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # TargetSession.for_controller puts its state under the temp dir: keep it in the test's.
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(root))
    return root


@pytest.fixture
def sigterm_restored() -> Iterator[None]:
    # for_controller installs a SIGTERM handler; whatever a test does, put the original back.
    previous = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, previous)


class Lines:
    """A progress callback that keeps what it was told."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, line: str) -> None:
        self.lines.append(line)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def controller(
    compose_file: Path, runner: FakeDocker, progress: Lines | None = None, **settings: Any
) -> TargetSession:
    return TargetSession.for_controller(
        ApexSettings(stack=compose_file, **settings),
        runner=runner,
        progress=progress or Lines(),
        start_time_of=_start_time_of,
    )


def _start_time_of(pid: int) -> float | None:
    """Every pid but DEAD_PID is alive, started at its own value (a fake start time)."""
    return None if pid == DEAD_PID else float(pid)


def worker_of(session: TargetSession, runner: FakeDocker) -> TargetSession:
    """What an xdist worker builds from the controller's workerinput."""
    return TargetSession.from_workerinput(
        session.settings, dict(session.workerinput()), runner=runner, progress=Lines()
    )


# --- project names and stale stacks ----------------------------------------------------------


def test_project_names_carry_the_owner_pid_and_are_unique() -> None:
    name = new_project_name(pid=1234)
    assert name.startswith("apexrun-1234-")
    assert len(name.rsplit("-", 1)[1]) == 6
    assert new_project_name() != new_project_name()
    assert new_project_name().startswith(f"apexrun-{os.getpid()}-")


def test_kept_names_sort_by_age(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(time, "time", lambda: 1_700_000_000)
    older = new_project_name(keep=True)
    monkeypatch.setattr(time, "time", lambda: 1_700_000_001)
    newer = new_project_name(keep=True)
    assert older.startswith("apexkeep-")
    assert newer.startswith("apexkeep-")
    assert sorted([newer, older]) == [older, newer]


# This machine as the reaper sees it; the stacks below claim owners relative to it.
HERE = dataclasses.replace(RunIdentity.of_process(os.getpid(), ""), pid=0, started=0.0)


def owned_by(project: str, pid: int, started: float | None = None, **other: Any) -> str:
    """One row of the reaper's `docker ps --format` listing: a container of `project`
    labelled as started by `pid` (at `started`) on this host, unless `other` says otherwise."""
    owner = dataclasses.replace(
        HERE, pid=pid, started=float(pid) if started is None else started, run=project, **other
    )
    labels = owner.labels()
    return "\t".join([project, *(labels[f"io.pytest-apex.{n}"] for n in reaping._IDENTITY_LABELS)])


def listing(*rows: str) -> FakeDocker:
    return FakeDocker().on("docker", "ps", "--all", "--format", out="\n".join(rows) + "\n")


def test_only_provably_dead_stacks_of_this_host_are_stale() -> None:
    runner = listing(
        owned_by(f"apexrun-{DEAD_PID}-a1b2c3", DEAD_PID),  # crashed run: reaped
        owned_by(f"apexrun-{LIVE_PID}-a1b2c3", LIVE_PID),  # a run still going: left alone
        owned_by(f"apexrun-{LIVE_PID}-b0b0b0", LIVE_PID, started=7.0),  # its pid was reused
        owned_by(f"apexrun-{DEAD_PID}-01d01d", DEAD_PID, boot="before-the-reboot"),
        owned_by(f"apexrun-{DEAD_PID}-e1e1e1", DEAD_PID, host="another-host"),
        owned_by(f"apexrun-{DEAD_PID}-c1c1c1", DEAD_PID, pid_namespace="pid:[4026532999]"),
        owned_by(f"apexrun-{DEAD_PID}-d1d1d1", DEAD_PID, uid=os.getuid() + 1),
        owned_by("apexkeep-6553f100-beef", DEAD_PID),  # kept on purpose: never reaped
        owned_by(f"apexrun-{LIVE_PID}-f1f1f1", DEAD_PID),  # name and labels disagree
        f"apexrun-{DEAD_PID}-a2a2a2\t\t\t\t\t\t\t",  # our name, but no labels
    )
    stale = stale_projects(runner, HERE, _start_time_of)
    assert {s.project: s.reason for s in stale} == {
        f"apexrun-{DEAD_PID}-a1b2c3": f"its run (pid {DEAD_PID}) is gone",
        f"apexrun-{LIVE_PID}-b0b0b0": (
            f"its run (pid {LIVE_PID}) is gone; that pid now belongs to another process"
        ),
        f"apexrun-{DEAD_PID}-01d01d": "it was started before this machine last booted",
    }


def test_reaping_takes_down_only_the_stale_stacks_and_says_why(tmp_path: Path) -> None:
    runner = listing(
        owned_by(f"apexrun-{DEAD_PID}-a1b2c3", DEAD_PID),
        owned_by(f"apexrun-{LIVE_PID}-d4e5f6", LIVE_PID),
    )
    progress = Lines()
    reaped = reap_stale(runner, progress, HERE, _start_time_of, cwd=tmp_path)
    assert reaped == [f"apexrun-{DEAD_PID}-a1b2c3"]
    downs = runner.ran("compose", "down")
    assert len(downs) == 1
    assert downs[0][:4] == ["docker", "compose", "--project-name", f"apexrun-{DEAD_PID}-a1b2c3"]
    assert (
        f"removing stack apexrun-{DEAD_PID}-a1b2c3 left behind by a crashed run: "
        f"its run (pid {DEAD_PID}) is gone"
    ) in progress.text


def test_stale_listing_survives_an_engine_error() -> None:
    runner = FakeDocker().on("docker", "ps", "--format", rc=1, err="Cannot connect to the daemon")
    assert stale_projects(runner, HERE, _start_time_of) == []


def test_reuse_picks_the_newest_running_kept_stack_of_the_same_file(compose_file: Path) -> None:
    other = compose_file.parent / "other.yml"
    listing = [
        {
            "Name": "apexkeep-6553f100-aaaa",
            "Status": "running(2)",
            "ConfigFiles": str(compose_file),
        },
        {
            "Name": "apexkeep-6553f200-bbbb",
            "Status": "running(2)",
            "ConfigFiles": str(compose_file),
        },
        {"Name": "apexkeep-6553f300-cccc", "Status": "running(2)", "ConfigFiles": str(other)},
        {
            "Name": f"apexrun-{LIVE_PID}-dddd",
            "Status": "running(2)",
            "ConfigFiles": str(compose_file),
        },
        {"Name": "apexkeep-6553f400-eeee", "Status": "exited(2)", "ConfigFiles": str(compose_file)},
    ]
    runner = FakeDocker().on("compose", "ls", out=json.dumps(listing))
    assert kept_project_for(compose_file, runner) == "apexkeep-6553f200-bbbb"


# --- ComposeTarget: commands, failure diagnosis, Docker missing ---------------------------------


def test_up_runs_in_the_run_project_with_wait_and_a_wait_timeout(compose_file: Path) -> None:
    runner = FakeDocker(HEALTHY)
    target = ComposeTarget(compose_file, "apexrun-1-abcdef", env={"APEX_FAULTS": ""}, runner=runner)
    target.start()
    (up,) = runner.ran("compose", "up")
    assert up[:4] == ["docker", "compose", "--project-name", "apexrun-1-abcdef"]
    assert ["-f", compose_file.name] == up[4:6]
    assert {"--build", "--wait"} <= set(up)
    assert up[up.index("--wait-timeout") + 1] == str(compose._WAIT_TIMEOUT_S)
    assert runner.ran("compose", "config", "--quiet")  # validated first


def _failing_stack(project: str) -> FakeDocker:
    health = {
        "Status": "unhealthy",
        "Log": [
            {"ExitCode": 1, "Output": "probe-says-not-ready\n"},
            {"ExitCode": 1, "Output": "connection refused on :6379\n"},
        ],
    }
    progress_noise = "\n".join(
        f" Container {project}-{s}-1  {what}"
        for s in ("cache", "web")
        for what in ("Creating", "Created", "Starting", "Started", "Waiting")
    )
    return (
        FakeDocker(
            [
                ps_entry("web", state="created", health=""),
                ps_entry("cache", health="unhealthy"),
            ]
        )
        .on(
            "compose",
            "up",
            rc=1,
            err=f"{progress_noise}\ndependency failed to start: container {project}-cache-1"
            " is unhealthy\n",
        )
        .on("docker", "inspect", "--format", out=json.dumps(health))
        .on(
            "compose",
            "logs",
            "cache",
            out="\x1b[2K1:M * Ready to accept connections\n1:M # out of memory?\n",
        )
    )


def test_a_stack_that_does_not_get_healthy_is_diagnosed(compose_file: Path) -> None:
    project = "apexrun-1-abcdef"
    runner = _failing_stack(project)
    target = ComposeTarget(compose_file, project, runner=runner)
    with pytest.raises(StackStartError) as caught:
        target.start()
    error = caught.value
    # The culprit first; the service that never started because of it after.
    assert error.unhealthy_services == ["cache", "web"]
    message = str(error)
    assert f"stack {project} ({compose_file}) did not become healthy" in message
    assert "service 'cache' is unhealthy" in message
    assert "exit 1: probe-says-not-ready" in message  # health-check output
    assert "exit 1: connection refused on :6379" in message
    assert "1:M * Ready to accept connections" in message  # log tail, without escapes
    assert "1:M # out of memory?" in message
    assert "\x1b" not in message
    assert "service 'web' was created but never started" in message
    # Compose's reason is kept, its progress chatter is not.
    assert f"dependency failed to start: container {project}-cache-1 is unhealthy" in message
    assert "Creating" not in message
    # The full compose output stays available (the fixture attaches it to Allure).
    assert "Container" in error.compose_output
    # Logs are read per service, 40 lines, without compose's prefix.
    (logs,) = runner.ran("compose", "logs", "cache")
    assert logs[logs.index("--tail") + 1] == "40"
    assert "--no-log-prefix" in logs


def test_an_exited_service_reports_its_exit_code(compose_file: Path) -> None:
    runner = FakeDocker([ps_entry("backend", state="exited", health="", exit_code=3)]).on(
        "compose", "up", rc=1, err="service backend exited with code 3\n"
    )
    with pytest.raises(StackStartError, match="service 'backend' exited with code 3"):
        ComposeTarget(compose_file, "apexrun-1-abcdef", runner=runner).start()


def test_an_up_that_times_out_is_diagnosed_too(compose_file: Path) -> None:
    def hang(args: list[str]) -> Response:
        raise subprocess.TimeoutExpired(args, 900.0, output=b"", stderr=b"still waiting")

    runner = FakeDocker([ps_entry("cache", health="starting")]).on("compose", "up", do=hang)
    with pytest.raises(StackStartError) as caught:
        ComposeTarget(compose_file, "apexrun-1-abcdef", runner=runner).start()
    assert "did not become healthy within 900 s" in str(caught.value)
    assert "service 'cache' is still starting" in str(caught.value)


def test_an_invalid_compose_file_is_named_with_composes_message(compose_file: Path) -> None:
    said = "validating docker-compose.yml: services.web Additional property colour is not allowed"
    runner = FakeDocker().on("compose", "config", "--quiet", rc=15, err=said + "\n")
    with pytest.raises(StackStartError) as caught:
        ComposeTarget(compose_file, "apexrun-1-abcdef", runner=runner).start()
    message = str(caught.value)
    assert f"compose file {compose_file} is invalid" in message
    assert said in message
    assert not runner.ran("compose", "up")


def test_a_missing_compose_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yml"
    with pytest.raises(StackStartError, match=f"compose file not found: {missing}"):
        ComposeTarget(missing, "apexrun-1-abcdef", runner=FakeDocker()).start()


def test_docker_not_installed_says_what_to_do(
    compose_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The real runner with an empty PATH: `docker` cannot be found (FileNotFoundError).
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    target = ComposeTarget(compose_file, "apexrun-1-abcdef", runner=SubprocessRunner())
    with pytest.raises(DockerUnavailable) as caught:
        target.start()
    message = str(caught.value)
    assert "'docker' is not installed or not on PATH" in message
    assert "Compose v2" in message
    assert "--apex-url" in message


def test_the_runner_tells_a_missing_directory_from_a_missing_program(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        SubprocessRunner()([sys.executable, "-c", "pass"], cwd=str(tmp_path / "gone"))


def test_an_engine_that_is_down_says_what_to_do(compose_file: Path) -> None:
    said = (
        "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. "
        "Is the docker daemon running?"
    )
    runner = FakeDocker().on("docker", "version", rc=1, err=said)
    with pytest.raises(DockerUnavailable) as caught:
        ComposeTarget(compose_file, "apexrun-1-abcdef", runner=runner).start()
    message = str(caught.value)
    assert "the Docker engine is not reachable" in message
    assert said in message
    assert "Start it" in message
    assert "--apex-url" in message


def test_no_permission_on_the_socket_points_at_the_docker_group(compose_file: Path) -> None:
    said = "permission denied while trying to connect to the Docker daemon socket"
    runner = FakeDocker().on("docker", "version", rc=1, err=said)
    with pytest.raises(DockerUnavailable, match="`docker` group"):
        ComposeTarget(compose_file, "apexrun-1-abcdef", runner=runner).check_engine()


def test_a_missing_compose_plugin_says_so(compose_file: Path) -> None:
    runner = FakeDocker().on("compose", "version", rc=1, err="'compose' is not a docker command")
    with pytest.raises(DockerUnavailable, match="Compose v2 plugin is missing"):
        ComposeTarget(compose_file, "apexrun-1-abcdef", runner=runner).check_engine()


# --- endpoints --------------------------------------------------------------------------------

PS_ENTRIES = [
    ps_entry("backend", publishers=[published(8000, 49153)]),
    ps_entry("postgres", publishers=[published(5432, 49155)]),
    ps_entry("redis", publishers=[published(6379, 49154)]),
    # A wildcard bind is listed for IPv4 and IPv6; reached on loopback.
    ps_entry(
        "frontend", publishers=[published(3000, 49156, "::"), published(3000, 49156, "0.0.0.0")]
    ),
    ps_entry("worker", publishers=[{"URL": "", "TargetPort": 9000, "PublishedPort": 0}]),
    ps_entry("migrate", publishers=[]),
]
EXPECTED_ENDPOINTS = {
    "backend": "http://127.0.0.1:49153",
    "postgres": "postgresql://127.0.0.1:49155",
    "redis": "redis://127.0.0.1:49154",
    "frontend": "http://127.0.0.1:49156",
}


@pytest.mark.parametrize(
    "output",
    [
        pytest.param("\n".join(json.dumps(e) for e in PS_ENTRIES) + "\n", id="object-per-line"),
        pytest.param(json.dumps(PS_ENTRIES) + "\n", id="array"),  # compose before 2.21
    ],
)
def test_endpoints_from_compose_ps_json(compose_file: Path, output: str) -> None:
    runner = FakeDocker().on("compose", "ps", out=output)
    target = ComposeTarget(
        compose_file, "apexrun-1-abcdef", runner=runner, port_schemes=PORT_SCHEMES
    )
    assert target.endpoints() == EXPECTED_ENDPOINTS
    assert target.endpoints() == EXPECTED_ENDPOINTS
    assert len(runner.ran("compose", "ps")) == 1  # cached


def test_endpoints_of_an_ipv6_only_bind_are_bracketed() -> None:
    entry = ComposeContainer(Service="backend", Publishers=[published(8000, 40000, "::1")])
    assert _endpoints_of([entry]) == {"backend": "http://[::1]:40000"}


@pytest.mark.parametrize("output", ["", "[]\n", "not json\n"])
def test_a_listing_of_nothing_reuses_nothing(compose_file: Path, output: str) -> None:
    assert kept_project_for(compose_file, FakeDocker().on("compose", "ls", out=output)) is None


# --- TargetSession ----------------------------------------------------------------------------


def test_a_second_worker_does_not_start_the_stack_again(
    compose_file: Path, state_root: Path, sigterm_restored: None
) -> None:
    runner = FakeDocker(HEALTHY)
    session = controller(compose_file, runner)
    first = worker_of(session, runner).acquire()
    second = worker_of(session, runner).acquire()
    again = worker_of(session, runner).acquire()
    assert len(runner.ran("compose", "up")) == 1
    assert first.name == second.name == again.name == f"compose:{session.project}"
    assert second.endpoints()["backend"] == "http://127.0.0.1:49153"
    # Every worker's session names the controller's project (so the pid is the controller's).
    assert session.project.startswith(f"apexrun-{os.getpid()}-")


def test_finish_tears_down_a_started_stack(
    compose_file: Path, state_root: Path, sigterm_restored: None
) -> None:
    runner = FakeDocker(HEALTHY)
    progress = Lines()
    session = controller(compose_file, runner, progress)
    worker_of(session, runner).acquire()  # started by a worker, torn down by the controller
    assert session.state_dir.is_dir()
    session.finish()
    (down,) = runner.ran("compose", "down")
    assert down[:4] == ["docker", "compose", "--project-name", session.project]
    assert {"--volumes", "--remove-orphans"} <= set(down)
    assert runner.ran(
        "docker", "ps", "--all", "--quiet", f"label=com.docker.compose.project={session.project}"
    )
    assert f"stack {session.project} removed" in progress.text
    assert not session.state_dir.exists()


def test_finish_does_nothing_when_no_test_used_the_stack(
    compose_file: Path, state_root: Path, sigterm_restored: None
) -> None:
    runner = FakeDocker(HEALTHY)
    session = controller(compose_file, runner)
    session.finish()
    assert runner.calls == []


def test_workers_never_tear_down(
    compose_file: Path, state_root: Path, sigterm_restored: None
) -> None:
    runner = FakeDocker(HEALTHY)
    session = controller(compose_file, runner)
    worker = worker_of(session, runner)
    worker.acquire()
    worker.finish()
    assert not runner.ran("compose", "down")


def test_keep_leaves_the_stack_and_says_how_to_reach_and_stop_it(
    compose_file: Path, state_root: Path, sigterm_restored: None
) -> None:
    runner = FakeDocker(HEALTHY)
    progress = Lines()
    session = controller(compose_file, runner, progress, keep=True)
    assert session.project.startswith("apexkeep-")
    session.acquire()
    session.finish()
    assert not runner.ran("compose", "down")
    text = progress.text
    assert f"stack {session.project} kept running" in text
    assert "http://127.0.0.1:49153" in text
    assert "redis://127.0.0.1:49154" in text
    assert f"docker compose -p {session.project} down --volumes" in text
    assert "--apex-reuse" in text


def test_reuse_attaches_to_a_kept_stack_and_leaves_it_running(
    compose_file: Path, state_root: Path, sigterm_restored: None
) -> None:
    kept = "apexkeep-6553f100-aaaa"
    listing = [{"Name": kept, "Status": "running(2)", "ConfigFiles": str(compose_file)}]
    runner = FakeDocker(HEALTHY).on("compose", "ls", out=json.dumps(listing))
    progress = Lines()
    session = controller(compose_file, runner, progress, reuse=True)
    target = worker_of(session, runner).acquire()
    assert target.name == f"compose:{kept}"
    assert not runner.ran("compose", "up")
    session.finish()
    assert not runner.ran("compose", "down")
    assert f"docker compose -p {kept} down --volumes" in progress.text


def test_reuse_without_a_kept_stack_starts_one(
    compose_file: Path, state_root: Path, sigterm_restored: None
) -> None:
    runner = FakeDocker(HEALTHY)
    progress = Lines()
    session = controller(compose_file, runner, progress, reuse=True)
    assert session.acquire().name == f"compose:{session.project}"
    assert len(runner.ran("compose", "up")) == 1
    assert "no running kept stack to reuse" in progress.text


def test_an_interrupted_start_is_still_torn_down(
    compose_file: Path, state_root: Path, sigterm_restored: None
) -> None:
    def interrupted(args: list[str]) -> Response:
        raise KeyboardInterrupt

    runner = FakeDocker(HEALTHY).on("compose", "up", do=interrupted)
    session = controller(compose_file, runner)
    with pytest.raises(KeyboardInterrupt):
        session.acquire()
    state = json.loads((session.state_dir / "state.json").read_text())
    assert state["status"] == "starting"
    # Another worker of the same run does not try again, and says why.
    with pytest.raises(StackStartError, match="was interrupted"):
        worker_of(session, runner).acquire()
    session.finish()
    (down,) = runner.ran("compose", "down")
    assert session.project in down


def test_a_failed_start_is_removed_at_once_and_reported_to_every_worker(
    compose_file: Path, state_root: Path, sigterm_restored: None
) -> None:
    session = controller(compose_file, FakeDocker())
    runner = _failing_stack(session.project)
    session.runner = runner
    with pytest.raises(StackStartError) as first:
        worker_of(session, runner).acquire()
    assert len(runner.ran("compose", "down")) == 1  # removed right away
    with pytest.raises(StackStartError) as second:
        worker_of(session, runner).acquire()
    assert len(runner.ran("compose", "up")) == 1  # and not retried
    assert str(second.value) == str(first.value)
    assert "service 'cache' is unhealthy" in str(second.value)
    session.finish()  # nothing left to remove: no second `down`
    assert len(runner.ran("compose", "down")) == 1


def test_a_failed_start_is_torn_down_even_with_keep(
    compose_file: Path, state_root: Path, sigterm_restored: None
) -> None:
    session = controller(compose_file, FakeDocker(), keep=True)
    runner = _failing_stack(session.project)
    session.runner = runner
    with pytest.raises(StackStartError):
        session.acquire()
    assert runner.ran("compose", "--project-name", session.project, "down")


def test_docker_unavailable_reaches_every_worker_as_itself(
    compose_file: Path, state_root: Path, sigterm_restored: None
) -> None:
    runner = FakeDocker().on("docker", "version", rc=1, err="Cannot connect to the Docker daemon")
    session = controller(compose_file, runner)
    with pytest.raises(DockerUnavailable) as first:
        session.acquire()
    with pytest.raises(DockerUnavailable) as second:
        worker_of(session, runner).acquire()
    assert str(first.value) == str(second.value)
    assert len(runner.ran("docker", "version")) == 1
    session.finish()  # a stack that never existed: no teardown, no error
    assert not runner.ran("compose", "down")


def test_a_start_reaps_stale_stacks_first(
    compose_file: Path, state_root: Path, sigterm_restored: None
) -> None:
    runner = FakeDocker(HEALTHY).on(
        "docker",
        "ps",
        "--all",
        "--format",
        out=owned_by(f"apexrun-{DEAD_PID}-a1b2c3", DEAD_PID)
        + "\n"
        + owned_by("apexkeep-6553f100-aaaa", DEAD_PID),
    )
    session = controller(compose_file, runner)
    session.acquire()
    downs = runner.ran("compose", "down")
    assert [d[3] for d in downs] == [f"apexrun-{DEAD_PID}-a1b2c3"]
    first_up = runner.calls.index(runner.ran("compose", "up")[0])
    assert runner.calls.index(downs[0]) < first_up


def test_a_start_removes_state_dirs_of_crashed_runs(
    compose_file: Path, state_root: Path, sigterm_restored: None
) -> None:
    parent = state_root / f"pytest-apex-{os.getuid()}"
    crashed = parent / f"apexrun-{DEAD_PID}-a1b2c3"
    running = parent / f"apexrun-{LIVE_PID}-d4e5f6"
    kept = parent / "apexkeep-6553f100-aaaa"
    elsewhere = parent / f"apexrun-{DEAD_PID}-e1e1e1"  # a run in another pid namespace
    unknown = parent / f"apexrun-{DEAD_PID}-00000f"  # says nothing of its owner
    for path, owner in (
        (crashed, HERE),
        (running, dataclasses.replace(HERE, pid=LIVE_PID, started=float(LIVE_PID))),
        (kept, HERE),
        (elsewhere, dataclasses.replace(HERE, pid_namespace="pid:[4026532999]")),
        (unknown, None),
    ):
        path.mkdir(parents=True)
        (path / "lock").touch()
        if owner is not None:
            labels = dataclasses.replace(owner, pid=owner.pid or DEAD_PID).labels()
            (path / "owner.json").write_text(json.dumps(labels))
    controller(compose_file, FakeDocker(HEALTHY)).acquire()
    assert not crashed.exists()
    assert running.exists()
    assert kept.exists()
    assert elsewhere.exists()
    assert unknown.exists()


def test_the_fault_switches_reach_compose(
    compose_file: Path, state_root: Path, sigterm_restored: None
) -> None:
    runner = FakeDocker(HEALTHY)
    controller(compose_file, runner, faults=("slow_redis", "leak")).acquire()
    up_index = runner.calls.index(runner.ran("compose", "up")[0])
    assert runner.envs[up_index]["APEX_FAULTS"] == "slow_redis,leak"


def test_a_container_fault_brings_its_override_file(
    compose_file: Path, state_root: Path, sigterm_restored: None
) -> None:
    # root_user is a container property: the description names the file that applies it.
    runner = FakeDocker(HEALTHY)
    controller(compose_file, runner, faults=("root_user",)).acquire()
    [up] = runner.ran("compose", "up")
    assert str(compose_file.parent / "faults" / "root_user.yml") in up
    assert runner.envs[runner.calls.index(up)]["APEX_FAULTS"] == "root_user"


def test_finish_removes_containers_that_outlive_down(
    compose_file: Path, state_root: Path, sigterm_restored: None
) -> None:
    # A container whose create was in flight when `up` was killed shows up after `down`.
    leftovers = iter(["c0ffee\n", ""])
    runner = FakeDocker(HEALTHY).on(
        "docker", "ps", "--all", "--quiet", do=lambda args: _done(args, 0, next(leftovers, ""))
    )
    session = controller(compose_file, runner)
    session.acquire()
    session.finish()
    downs = runner.ran("compose", "down")
    assert len(downs) == 2
    assert "-f" not in downs[1]  # the second one by project name only


def _finish_with_the_engine_gone(compose_file: Path, said: str) -> tuple[TargetSession, Lines]:
    """A started session whose engine raises `said` at teardown, finished."""

    def engine_gone(args: list[str]) -> Response:
        raise DockerUnavailable(said)

    runner = FakeDocker(HEALTHY)
    progress = Lines()
    session = controller(compose_file, runner, progress)
    session.acquire()
    runner.on("compose", "down", do=engine_gone)
    session.finish()
    return session, progress


def test_finish_never_raises_and_says_how_to_clean_up(
    compose_file: Path, state_root: Path, sigterm_restored: None
) -> None:
    session, progress = _finish_with_the_engine_gone(compose_file, "the engine went away")
    assert "the engine went away" in progress.text
    assert f"docker compose -p {session.project} down --volumes" in progress.text


def test_a_second_signal_does_not_cut_the_teardown_short(
    compose_file: Path, state_root: Path, sigterm_restored: None
) -> None:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers live in the main thread")

    def impatient(args: list[str]) -> Response:
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C again while `down` runs
        os.kill(os.getpid(), signal.SIGTERM)
        _await(lambda: len(progress.lines) >= 2 and "please wait" in progress.lines[-1])
        return _done(args)

    runner = FakeDocker(HEALTHY)
    progress = Lines()
    session = controller(compose_file, runner, progress)
    session.acquire()
    runner.on("compose", "down", do=impatient)
    session.finish()  # no KeyboardInterrupt
    assert "please wait" in progress.text
    assert f"stack {session.project} removed" in progress.text
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_sigterm_becomes_keyboard_interrupt_until_finish(
    compose_file: Path, state_root: Path, sigterm_restored: None
) -> None:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers live in the main thread")
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    session = controller(compose_file, FakeDocker(HEALTHY))
    with pytest.raises(KeyboardInterrupt):
        _terminate_me()
    session.finish()
    # Put back, so an in-process run (pytester) leaves the host process as it was.
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_someone_elses_sigterm_handler_is_left_alone(
    compose_file: Path, state_root: Path, sigterm_restored: None
) -> None:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers live in the main thread")

    def theirs(signum: int, frame: object) -> None:
        pass

    signal.signal(signal.SIGTERM, theirs)
    controller(compose_file, FakeDocker(HEALTHY)).finish()
    assert signal.getsignal(signal.SIGTERM) is theirs


def test_an_external_target_needs_no_docker(state_root: Path, sigterm_restored: None) -> None:
    runner = FakeDocker()
    session = TargetSession.for_controller(
        ApexSettings(urls={"backend": "https://staging.example/"}), runner=runner
    )
    target = session.acquire()
    assert target.endpoints() == {"backend": "https://staging.example"}
    assert target.containers() == []
    session.finish()
    assert runner.calls == []


def _state(session: TargetSession) -> dict[str, Any]:
    return dict(json.loads((session.state_dir / "state.json").read_text()))


# --- timeouts and unexpected errors during the start ------------------------------------------


def test_the_real_runner_turns_a_timeout_into_a_sentence() -> None:
    with pytest.raises(CommandTimedOut) as caught:
        SubprocessRunner()([sys.executable, "-c", "import time; time.sleep(10)"], timeout=0.3)
    error = caught.value
    # A DockerUnavailable for whoever reports an unusable engine, a TimeoutExpired for `up`.
    assert isinstance(error, DockerUnavailable)
    assert isinstance(error, subprocess.TimeoutExpired)
    assert "did not answer within 0.3 s; is the Docker engine hung?" in str(error)
    assert "--apex-url" in str(error)


def _hung(args: list[str]) -> Response:
    raise CommandTimedOut(args, 30.0)


def test_a_hung_engine_fails_every_worker_with_the_same_sentence(
    compose_file: Path, state_root: Path, sigterm_restored: None
) -> None:
    runner = FakeDocker().on("docker", "version", do=_hung)
    session = controller(compose_file, runner)
    with pytest.raises(DockerUnavailable) as first:
        session.acquire()
    assert "`docker version --format '{{.Server.Version}}'` did not answer within 30 s" in str(
        first.value
    )
    assert _state(session)["status"] == "failed"
    with pytest.raises(DockerUnavailable) as second:
        worker_of(session, runner).acquire()
    assert str(second.value) == str(first.value)
    assert len(runner.ran("docker", "version")) == 1  # the second worker did not ask again


def test_a_bare_timeout_from_another_runner_is_said_in_words_too(
    compose_file: Path, state_root: Path, sigterm_restored: None
) -> None:
    def bare(args: list[str]) -> Response:
        raise subprocess.TimeoutExpired(args, 60.0)

    runner = FakeDocker().on("compose", "config", do=bare)
    session = controller(compose_file, runner)
    with pytest.raises(DockerUnavailable, match="did not answer within 60 s"):
        session.acquire()
    assert _state(session)["error_kind"] == "DockerUnavailable"


def test_an_up_that_hits_the_runner_timeout_keeps_its_diagnosis(
    compose_file: Path, state_root: Path, sigterm_restored: None
) -> None:
    def hang(args: list[str]) -> Response:
        raise CommandTimedOut(args, 900.0, b"", b"still waiting")

    runner = FakeDocker([ps_entry("cache", health="starting")]).on("compose", "up", do=hang)
    session = controller(compose_file, runner)
    with pytest.raises(StackStartError) as caught:
        session.acquire()
    assert "did not become healthy within 900 s" in str(caught.value)
    assert "service 'cache' is still starting" in str(caught.value)
    assert runner.ran("compose", "down")  # removed at once, as for any failed start


def test_any_error_during_the_start_is_recorded_for_the_other_workers(
    compose_file: Path, state_root: Path, sigterm_restored: None
) -> None:
    def broken(args: list[str]) -> Response:
        raise OSError(28, "No space left on device")

    runner = FakeDocker(HEALTHY).on("compose", "up", do=broken)
    session = controller(compose_file, runner)
    with pytest.raises(OSError, match="No space left"):  # as it is, with its traceback, here
        session.acquire()
    assert runner.ran("compose", "down")
    with pytest.raises(StackStartError) as other:  # and in words everywhere else
        worker_of(session, runner).acquire()
    assert f"starting stack {session.project} failed: OSError:" in str(other.value)
    assert "No space left on device" in str(other.value)
    assert len(runner.ran("compose", "up")) == 1


def test_the_recorded_start_error_is_redacted(
    compose_file: Path, state_root: Path, sigterm_restored: None
) -> None:
    said = "invalid interpolation: POSTGRES_PASSWORD=hunter2 in services.db"
    runner = FakeDocker().on("compose", "config", "--quiet", rc=15, err=said)
    session = controller(compose_file, runner)
    with pytest.raises(StackStartError):
        session.acquire()
    assert "hunter2" not in (session.state_dir / "state.json").read_text()
    with pytest.raises(StackStartError) as other:
        worker_of(session, runner).acquire()
    assert "POSTGRES_PASSWORD=[REDACTED]" in str(other.value)


# --- finish() and the start lock --------------------------------------------------------------


def test_finish_waits_for_a_worker_that_is_still_starting_the_stack(
    compose_file: Path, state_root: Path, sigterm_restored: None
) -> None:
    runner = FakeDocker(HEALTHY)
    progress = Lines()
    session = controller(compose_file, runner, progress)
    session.state_dir.mkdir(parents=True)
    starting = FileLock(str(session.state_dir / "lock"))
    starting.acquire()  # a worker between taking the lock and writing its state
    finisher = threading.Thread(target=session.finish)
    finisher.start()
    _await(lambda: "waiting for another process of this run" in progress.text)
    assert not runner.ran("compose", "down")  # nothing read yet: no state would mean "unused"
    RunState("up", session.project).write(session.state_dir / "state.json")
    starting.release()
    finisher.join(timeout=10)
    assert not finisher.is_alive()
    assert runner.ran("compose", "--project-name", session.project, "down")
    assert not session.state_dir.exists()


def test_finish_stops_waiting_for_the_lock_after_a_while_and_says_so(
    compose_file: Path,
    state_root: Path,
    sigterm_restored: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(lifecycle, "_LOCK_TIMEOUT_S", 0.2)
    runner = FakeDocker(HEALTHY)
    progress = Lines()
    session = controller(compose_file, runner, progress)
    session.state_dir.mkdir(parents=True)
    RunState("starting", session.project).write(session.state_dir / "state.json")
    stuck = FileLock(str(session.state_dir / "lock"))
    stuck.acquire()
    try:
        session.finish()
    finally:
        stuck.release()
    assert "stopped waiting (it did not finish within 0.2 s)" in progress.text
    assert runner.ran("compose", "--project-name", session.project, "down")


# --- the state directory -----------------------------------------------------------------------


def test_the_state_directory_is_per_user_and_private(
    compose_file: Path, state_root: Path, sigterm_restored: None
) -> None:
    session = controller(compose_file, FakeDocker(HEALTHY))
    root = state_root / f"pytest-apex-{os.getuid()}"
    assert session.state_dir == root / session.project
    session.acquire()
    assert root.stat().st_mode & 0o777 == 0o700
    assert session.state_dir.stat().st_mode & 0o777 == 0o700
    session.finish()
    assert root.is_dir()  # shared by this user's runs; only the run's own directory goes


def test_a_state_directory_others_can_write_to_is_refused(
    compose_file: Path, state_root: Path, sigterm_restored: None
) -> None:
    root = state_root / f"pytest-apex-{os.getuid()}"
    root.mkdir()
    root.chmod(0o777)
    runner = FakeDocker(HEALTHY)
    progress = Lines()
    session = controller(compose_file, runner, progress)
    with pytest.raises(StackStartError, match="is writable by other users \\(mode 777\\)"):
        session.acquire()
    assert runner.calls == []
    planted = root / session.project
    planted.mkdir()
    (planted / "state.json").write_text(json.dumps({"status": "up", "project": "theirs"}))
    session.finish()  # reads nothing from it, removes nothing in it
    assert not runner.ran("compose", "down")
    assert planted.exists()
    assert "refusing to use the state directory" in progress.text


def test_a_state_directory_of_another_user_is_refused(
    compose_file: Path,
    state_root: Path,
    sigterm_restored: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    me = os.getuid()
    monkeypatch.setattr(os, "getuid", lambda: me + 4242)
    (state_root / f"pytest-apex-{me + 4242}").mkdir(mode=0o700)  # owned by `me`, not by us
    session = controller(compose_file, FakeDocker(HEALTHY))
    with pytest.raises(StackStartError, match=f"is owned by uid {me}, not by you"):
        session.acquire()


def test_a_symlink_in_place_of_the_state_directory_is_refused(
    compose_file: Path, state_root: Path, sigterm_restored: None
) -> None:
    elsewhere = state_root / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    (state_root / f"pytest-apex-{os.getuid()}").symlink_to(elsewhere)
    session = controller(compose_file, FakeDocker(HEALTHY))
    with pytest.raises(StackStartError, match="is not a directory"):
        session.acquire()
    assert list(elsewhere.iterdir()) == []


# --- containers -------------------------------------------------------------------------------


def _inspect(service: str) -> dict[str, Any]:
    return {
        "Id": f"id-{service}",
        "Image": f"sha256:{service}",
        "Config": {"User": "10001", "Labels": {"com.docker.compose.service": service}},
        "State": {"Status": "running", "Health": {"Status": "healthy"}},
        "HostConfig": {"Memory": 256 * 2**20, "NanoCpus": 500_000_000},
        "NetworkSettings": {"Ports": {"8000/tcp": [{"HostIp": "127.0.0.1", "HostPort": "49153"}]}},
    }


def _docker_inspect(gone: Sequence[str] = ()) -> Handler:
    """`docker inspect ID...` as the engine answers it, with the containers in `gone` removed.

    A missing one fails the whole call (exit 1), as with the real engine.
    """

    def answer(args: list[str]) -> Response:
        ids = args[args.index("inspect") + 1 :]
        found = [_inspect(i.removeprefix("id-")) for i in ids if i not in gone]
        missing = [i for i in ids if i in gone]
        err = "".join(f"Error: No such object: {i}\n" for i in missing)
        return _done(args, 1 if missing else 0, json.dumps(found), err)

    return answer


def test_containers_are_listed_and_inspected(compose_file: Path) -> None:
    runner = FakeDocker(HEALTHY).on("docker", "inspect", do=_docker_inspect())
    containers = ComposeTarget(compose_file, "apexrun-1-abcdef", runner=runner).containers()
    assert [c.service for c in containers] == ["backend", "redis"]
    assert containers[0].user == "10001"
    assert containers[0].memory_limit_bytes == 256 * 2**20
    assert containers[0].published == (("127.0.0.1", 49153, 8000),)
    assert len(runner.ran("docker", "inspect")) == 1  # one call for all of them


def test_a_container_that_vanishes_mid_call_does_not_take_the_others_with_it(
    compose_file: Path,
) -> None:
    runner = FakeDocker(HEALTHY).on("docker", "inspect", do=_docker_inspect(gone=["id-redis"]))
    containers = ComposeTarget(compose_file, "apexrun-1-abcdef", runner=runner).containers()
    assert [c.service for c in containers] == ["backend"]


@pytest.mark.parametrize(
    ("words", "said"),
    [
        (("compose", "ps"), "Cannot connect to the Docker daemon"),
        (("docker", "inspect"), "permission denied while trying to connect"),
    ],
)
def test_a_failed_container_query_raises_instead_of_answering_none(
    compose_file: Path, words: tuple[str, ...], said: str
) -> None:
    runner = (
        FakeDocker(HEALTHY)
        .on("docker", "inspect", do=_docker_inspect())
        .on(*words, rc=1, err=said + "\n")
    )
    with pytest.raises(ContainerQueryError, match=said):
        ComposeTarget(compose_file, "apexrun-1-abcdef", runner=runner).containers()


def test_apex_containers_fails_on_a_compose_target_docker_cannot_answer_for(
    compose_file: Path,
) -> None:
    runner = FakeDocker(HEALTHY).on("compose", "ps", rc=1, err="Cannot connect to the daemon")
    target = ComposeTarget(
        compose_file, "apexrun-1-abcdef", runner=runner, port_schemes=PORT_SCHEMES
    )
    with pytest.raises(pytest.fail.Exception) as caught:
        _containers_or_skip(target)
    message = str(caught.value)
    assert "cannot inspect the containers of compose:apexrun-1-abcdef" in message
    assert "ContainerQueryError" in message
    assert "Cannot connect to the daemon" in message


def test_apex_containers_fails_on_a_compose_target_without_containers(compose_file: Path) -> None:
    target = ComposeTarget(compose_file, "apexrun-1-abcdef", runner=FakeDocker())
    with pytest.raises(pytest.fail.Exception, match="Docker lists no container for it"):
        _containers_or_skip(target)


def test_apex_containers_skips_only_where_there_is_no_container_access(
    compose_file: Path,
) -> None:
    with pytest.raises(pytest.skip.Exception, match="external gives no container access"):
        _containers_or_skip(ExternalTarget({"backend": "https://staging.example"}))
    runner = FakeDocker(HEALTHY).on("docker", "inspect", do=_docker_inspect())
    target = ComposeTarget(
        compose_file, "apexrun-1-abcdef", runner=runner, port_schemes=PORT_SCHEMES
    )
    assert [c.service for c in _containers_or_skip(target)] == ["backend", "redis"]


# --- progress -------------------------------------------------------------------------------


def test_bring_up_reports_each_state_change_and_a_still_waiting_line(
    compose_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(compose, "_POLL_INTERVAL_S", 0.01)
    monkeypatch.setattr(compose, "_STILL_WAITING_EVERY_S", 0.2)
    states = [
        [],
        [ps_entry("cache", health="starting")],
        [ps_entry("cache", health="healthy"), ps_entry("web", state="created", health="")],
        [ps_entry("cache", health="healthy"), ps_entry("web", health="starting")],
    ]
    final = [ps_entry("cache", health="healthy"), ps_entry("web", health="healthy")]
    polls = 0
    progress = Lines()

    def ps(args: list[str]) -> Response:
        nonlocal polls
        polls += 1
        current = states[min(polls - 1, len(states) - 1)]
        if released.is_set():
            current = final
        return _done(args, 0, "\n".join(json.dumps(e) for e in current))

    released = threading.Event()

    def up(args: list[str]) -> Response:
        # `up --wait` blocks until the watcher saw every step and said it is still waiting.
        _await(lambda: polls > len(states) and "still waiting" in progress.text)
        released.set()
        return _done(args)

    runner = FakeDocker().on("compose", "ps", do=ps).on("compose", "up", do=up)
    ComposeTarget(compose_file, "apexrun-1-abcdef", runner=runner, progress=progress).up()
    text = progress.text
    for change in (
        "cache: new -> starting",
        "cache: starting -> healthy",
        "web: new -> created",
        "web: created -> starting",
        "web: starting -> healthy",  # reported after `up` returned
    ):
        assert change in text
    assert "still waiting" in text
    assert "waiting for web (starting)" in text
    assert progress.lines[-1].startswith("stack apexrun-1-abcdef healthy in")


def test_a_broken_progress_callback_does_not_break_the_bring_up(
    compose_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(compose, "_POLL_INTERVAL_S", 0.01)
    calls = 0

    def broken(line: str) -> None:
        nonlocal calls
        calls += 1
        if line.startswith("  "):
            raise OSError("terminal gone")

    def up(args: list[str]) -> Response:
        _await(lambda: calls >= 2)
        return _done(args)

    runner = FakeDocker(HEALTHY).on("compose", "up", do=up)
    ComposeTarget(compose_file, "apexrun-1-abcdef", runner=runner, progress=broken).up()


# --- diagnosis rendering and the apex_target fixture -----------------------------------------


def test_diagnosis_render_names_state_output_and_logs() -> None:
    diagnosis = ServiceDiagnosis("auth", "running", "unhealthy", "exit 7: curl failed", "boom\n")
    assert diagnosis.render().splitlines() == [
        "service 'auth' is unhealthy",
        "  last health-check output:",
        "    exit 7: curl failed",
        "  last log lines:",
        "    boom",
    ]


FAILING_SESSION = """
from pytest_apex.targets.errors import ServiceDiagnosis, StackStartError

class FailingSession:
    def workerinput(self):
        return {}

    def acquire(self):
        raise StackStartError(
            "stack apexrun-1-abcdef (/x.yml) did not become healthy",
            [ServiceDiagnosis("cache", "running", "unhealthy", "exit 1: probe-says-no",
                              "cache log line\\npassword=hunter2\\n")],
            " Container x  Started\\ncontainer apexrun-1-abcdef-cache-1 is unhealthy\\n",
        )

    def describe(self):
        return {"target": "compose:apexrun-1-abcdef"}

    def finish(self):
        pass

def pytest_apex_target_session(settings, config):
    return FailingSession()
"""


def test_a_stack_failure_errors_the_test_and_goes_into_allure(tmp_path: Path) -> None:
    # Its own process: allure-pytest's listeners are process-wide (see conftest.run_projects).
    (tmp_path / "conftest.py").write_text(FAILING_SESSION, encoding="utf-8")
    (tmp_path / "test_it.py").write_text(
        textwrap.dedent(
            """
            def test_one(apex_endpoints):
                pass

            def test_two(apex_target):
                pass
            """
        ),
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--alluredir", "allure"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "2 errors" in result.stdout
    assert "stack failure: stack apexrun-1-abcdef (/x.yml) did not become healthy" in result.stdout
    assert "service 'cache' is unhealthy" in result.stdout
    assert "During handling of the above exception" not in result.stdout
    attachments = {}
    for path in (tmp_path / "allure").glob("*-attachment*"):
        attachments[path.name] = path.read_text(encoding="utf-8")
    texts = "\n".join(attachments.values())
    assert "exit 1: probe-says-no" in texts
    assert "cache log line" in texts
    assert "container apexrun-1-abcdef-cache-1 is unhealthy" in texts
    assert "hunter2" not in texts  # attachments are redacted
    containers = [
        json.loads(p.read_text(encoding="utf-8"))
        for p in (tmp_path / "allure").glob("*-container.json")
    ]
    names = {
        a["name"]
        for c in containers
        for b in c.get("befores", [])
        for a in b.get("attachments", [])
    }
    assert {"stack failure", "docker compose output"} <= names


def _terminate_me() -> None:
    os.kill(os.getpid(), signal.SIGTERM)
    _await(lambda: False, timeout=5.0)  # the handler raises within a few bytecodes


def _await(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait for a condition with a deadline (the fakes' stand-in for real time passing)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(0.01)


# --- bounded teardown, recreate, redaction, the environment ------------------------------------


def test_the_whole_teardown_is_bounded_and_says_what_is_left(
    compose_file: Path,
    state_root: Path,
    sigterm_restored: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # An engine that hangs on every removal: each command runs until its timeout.
    monkeypatch.setattr(lifecycle, "TEARDOWN_BUDGET_S", 1.0)

    def hangs(args: list[str], timeout: float | None) -> Response:
        time.sleep(min(timeout or 30.0, 30.0))
        raise CommandTimedOut(args, timeout or 30.0)

    runner = FakeDocker(HEALTHY)
    progress = Lines()
    session = controller(compose_file, runner, progress)
    session.acquire()
    runner.on("docker", "ps", "--all", "--quiet", out="c0ffee\nbadc0de\n")
    runner.on("compose", "down", do=lambda args: hangs(args, runner.timeouts[-1]))
    runner.on("docker", "rm", do=lambda args: hangs(args, runner.timeouts[-1]))
    started = time.monotonic()
    session.finish()
    assert time.monotonic() - started < 3.0  # the budget, not 900 s per step
    text = progress.text
    assert f"stack {session.project} not removed within 1 s" in text
    assert "left: 2 container(s) (c0ffee badc0de)" in text
    assert f"docker compose -p {session.project} down --volumes --remove-orphans" in text


def test_recreate_waits_with_a_wait_timeout(compose_file: Path) -> None:
    runner = FakeDocker(HEALTHY)
    target = ComposeTarget(compose_file, "apexrun-1-abcdef", runner=runner, wait_timeout=42)
    target.recreate(["backend"], {"APEX_FAULTS": "idor"})
    (up,) = runner.ran("compose", "up", "--force-recreate")
    assert "--wait" in up
    assert up[up.index("--wait-timeout") + 1] == "42"
    assert runner.envs[runner.calls.index(up)]["APEX_FAULTS"] == "idor"


def test_progress_lines_are_redacted(
    compose_file: Path, state_root: Path, sigterm_restored: None
) -> None:
    _session, progress = _finish_with_the_engine_gone(
        compose_file, "engine gone while running: POSTGRES_PASSWORD=hunter2"
    )
    assert "POSTGRES_PASSWORD=[REDACTED]" in progress.text
    assert "hunter2" not in progress.text


def test_bring_up_progress_is_redacted(compose_file: Path) -> None:
    progress = Lines()
    secret = compose_file.parent / "token=s3cr3t-value"  # a path that looks like a secret
    secret.mkdir()
    (secret / "compose.yml").write_text("services: {}\n")
    target = ComposeTarget(
        secret / "compose.yml", "apexrun-1-abcdef", runner=FakeDocker(HEALTHY), progress=progress
    )
    target.up()
    assert "s3cr3t-value" not in progress.text
    assert "token=[REDACTED]" in progress.text


def test_a_failing_compose_config_is_an_error_not_an_empty_environment(
    compose_file: Path,
) -> None:
    config = {"services": {"postgres": {"environment": {"POSTGRES_USER": "apex"}}}}
    answers = iter([_done([], 1, "", "Cannot connect to the Docker daemon\n")])
    runner = FakeDocker(HEALTHY).on(
        "compose",
        "config",
        "--format",
        do=lambda args: next(answers, _done(args, 0, json.dumps(config))),
    )
    target = ComposeTarget(compose_file, "apexrun-1-abcdef", runner=runner)
    with pytest.raises(ContainerQueryError, match="Cannot connect to the Docker daemon"):
        target.environment("postgres")
    assert target.environment("postgres") == {"POSTGRES_USER": "apex"}  # not cached


def test_apex_postgres_dsn_fails_on_a_compose_target_docker_cannot_answer_for(
    compose_file: Path,
) -> None:
    runner = FakeDocker(HEALTHY).on("compose", "config", "--format", rc=1, err="daemon gone")
    target = ComposeTarget(compose_file, "apexrun-1-abcdef", runner=runner)
    endpoints = {"postgres": "postgresql://127.0.0.1:49155"}
    with pytest.raises((pytest.fail.Exception, pytest.skip.Exception)) as caught:
        fixtures.apex_postgres_dsn.__wrapped__(  # type: ignore[attr-defined]
            target, endpoints, reference_description()
        )
    assert caught.type is pytest.fail.Exception, f"skipped as if external: {caught.value}"
    assert "cannot read the configuration of compose:apexrun-1-abcdef" in str(caught.value)
    assert "daemon gone" in str(caught.value)


# --- topologies: override files and endpoints served through another service -----------------

TWO_BACKENDS = [
    # Two replicas, each on an ephemeral port of its own: neither is "the" backend.
    ps_entry("backend", publishers=[published(8000, 40001)]),
    ps_entry("backend", publishers=[published(8000, 40002)]),
    ps_entry("gateway", publishers=[published(9000, 40009), published(8000, 40008)]),
    ps_entry("redis", publishers=[published(6379, 49154)]),
]


@pytest.fixture
def topology_file(compose_file: Path) -> Path:
    path = compose_file.parent / "topologies" / "two_backends.yml"
    path.parent.mkdir()
    path.write_text("services: {}\n", encoding="utf-8")
    return path


def test_a_topology_brings_its_override_files_and_serves_through_its_balancer(
    compose_file: Path, topology_file: Path, state_root: Path, sigterm_restored: None
) -> None:
    runner = FakeDocker(TWO_BACKENDS)
    target = controller(compose_file, runner, topology="two_backends").acquire()
    [up] = runner.ran("compose", "up")
    assert str(topology_file) in up
    # The balancer's published port for the backend's own container port (8000), not its
    # other one, and not a replica's.
    assert target.endpoints()["backend"] == "http://127.0.0.1:40008"
    assert target.endpoints()["redis"] == "redis://127.0.0.1:49154"


def test_a_topology_and_a_container_fault_bring_both_override_files(
    compose_file: Path, topology_file: Path, state_root: Path, sigterm_restored: None
) -> None:
    runner = FakeDocker(TWO_BACKENDS)
    controller(compose_file, runner, topology="two_backends", faults=("root_user",)).acquire()
    [up] = runner.ran("compose", "up")
    assert str(topology_file) in up
    assert str(compose_file.parent / "faults" / "root_user.yml") in up


def test_a_missing_topology_file_is_named_before_compose_runs(
    compose_file: Path, state_root: Path, sigterm_restored: None
) -> None:
    runner = FakeDocker(TWO_BACKENDS)
    session = controller(compose_file, runner, topology="two_backends")
    with pytest.raises(StackStartError) as caught:
        session.acquire()
    message = str(caught.value)
    assert message.startswith("topology two_backends: override file(s) ")
    assert str(compose_file.parent / "topologies" / "two_backends.yml") in message
    assert "topologies.two_backends.files" in message
    assert not runner.ran("compose", "up")
    with pytest.raises(StackStartError, match="topology two_backends: override file"):
        worker_of(session, runner).acquire()  # every worker hears the same


def test_a_balancer_that_does_not_publish_the_port_fails_the_start_naming_it(
    compose_file: Path, topology_file: Path, state_root: Path, sigterm_restored: None
) -> None:
    no_port = [e for e in TWO_BACKENDS if e["Service"] != "gateway"]
    no_port.append(ps_entry("gateway", publishers=[published(9000, 40009)]))
    runner = FakeDocker(no_port)
    session = controller(compose_file, runner, topology="two_backends")
    with pytest.raises(StackStartError) as caught:
        session.acquire()
    message = str(caught.value)
    assert "topology two_backends: backend is served by compose service 'gateway'" in message
    assert "port 8000" in message
    assert "gateway publishes 9000" in message
    assert len(runner.ran("compose", "down")) == 1  # the stack that cannot serve is removed


def test_a_balancer_that_is_not_there_is_named_too(compose_file: Path) -> None:
    target = ComposeTarget(
        compose_file,
        "apexrun-1-abcdef",
        runner=FakeDocker(HEALTHY),
        served_by={"backend": ServedBy("gateway", 8000)},
        topology="two_backends",
    )
    with pytest.raises(StackStartError, match="no running gateway container publishes a port"):
        target.endpoints()
    any_port = ComposeTarget(
        compose_file,
        "apexrun-1-abcdef",
        runner=FakeDocker(TWO_BACKENDS),
        served_by={"backend": ServedBy("gateway")},
    )
    assert any_port.endpoints()["backend"] == "http://127.0.0.1:40008"  # its lowest port


def test_on_an_external_target_a_topology_only_sets_expectations(
    state_root: Path, sigterm_restored: None
) -> None:
    runner = FakeDocker()
    settings = ApexSettings(urls={"backend": "https://lb.staging.example"}, topology="two_backends")
    target = TargetSession.for_controller(settings, runner=runner).acquire()
    assert target.endpoints() == {"backend": "https://lb.staging.example"}
    assert settings.selected_topology is not None
    assert dict(settings.selected_topology.replicated) == {"backend": 2}
    assert runner.calls == []


def test_each_replica_is_inspected_with_its_compose_number(compose_file: Path) -> None:
    def inspect(args: list[str]) -> Response:
        replicas = []
        for number in (1, 2):
            entry = _inspect("backend")
            entry["Id"] = f"id-backend-{number}"
            entry["Config"]["Labels"]["com.docker.compose.container-number"] = str(number)
            replicas.append(entry)
        return _done(args, 0, json.dumps(replicas))

    runner = FakeDocker(TWO_BACKENDS[:2]).on("docker", "inspect", do=inspect)
    containers = ComposeTarget(compose_file, "apexrun-1-abcdef", runner=runner).containers()
    assert [(c.service, c.number) for c in containers] == [("backend", 1), ("backend", 2)]
    assert _container_info("redis", _inspect("redis")).number == 0  # no label: unknown
