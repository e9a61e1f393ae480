"""Integration: two runs at once on one Docker engine, each in its own pid namespace.

The situation of CI jobs that share an engine (its socket mounted into their containers):
a pid in the other run's project name means nothing here, and must never get its stack
reaped. One run is started in a fresh pid namespace (`unshare`, root only) with a pid that
no process of this namespace has, so "is pid N alive?" answers no for a live run.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from tests.plugin.test_stack_lifecycle import (
    STACKS,
    _docker,
    _project_of,
    assert_gone,
    containers_of,
    pytestmark,  # noqa: F401  (integration, skipped without Docker, one xdist group)
    wait_for,
)

# Holds its stack until told to let go, then checks that all of it is still there. With
# APEX_WAIT_FOR set it asks for its stack only once that file exists (the other run is up).
HOLDS_ITS_STACK = """
import os, time
from pathlib import Path

import pytest

def _wait(path):
    deadline = time.monotonic() + 120
    while not Path(path).exists() and time.monotonic() < deadline:
        time.sleep(0.05)

@pytest.fixture(scope="session")
def gate():
    if os.environ.get("APEX_WAIT_FOR"):
        _wait(os.environ["APEX_WAIT_FOR"])

def test_holds_its_stack(gate, apex_target):
    Path(os.environ["APEX_UP"]).write_text(apex_target.name)
    _wait(os.environ["APEX_RELEASE"])
    states = [c.state for c in apex_target.containers()]
    assert states == ["running", "running"], states
"""


def _free_pid() -> int:
    """A pid no process of this namespace has (the other run will get it plus one)."""
    limit = int(Path("/proc/sys/kernel/pid_max").read_text())
    while True:
        pid = random.randrange(limit // 2, limit - 2)
        if not psutil.pid_exists(pid + 1):
            return pid


def _run_dir(base: Path, name: str) -> Path:
    directory = base / name
    (directory / "stack").mkdir(parents=True)
    shutil.copy(STACKS / "small.yml", directory / "stack" / "small.yml")
    (directory / "pytest.ini").write_text(
        f"[pytest]\napex_stack = {directory / 'stack' / 'small.yml'}\n"
        "asyncio_default_fixture_loop_scope = function\n"
    )
    (directory / "test_holds.py").write_text(HOLDS_ITS_STACK)
    return directory


def test_two_runs_at_once_in_different_pid_namespaces_keep_their_own_stacks(
    tmp_path: Path,
) -> None:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("a second pid namespace needs root and unshare(1)")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "APEX_"))}
    release = tmp_path / "release"
    ups = {name: tmp_path / f"{name}.up" for name in ("isolated", "host")}
    pid = _free_pid()
    pytest_command = f"{sys.executable} -m pytest -p no:cacheprovider -q"
    commands = {
        # Not exec'd: the shell stays pid 1 of the namespace, pytest gets pid + 1.
        "isolated": [
            "unshare",
            "--pid",
            "--fork",
            "--mount-proc",
            "sh",
            "-c",
            f"echo {pid} > /proc/sys/kernel/ns_last_pid && {pytest_command}",
        ],
        "host": pytest_command.split(),
    }
    runs = {
        name: subprocess.Popen(
            command,
            cwd=_run_dir(tmp_path, name),
            env={
                **env,
                "APEX_UP": str(ups[name]),
                "APEX_RELEASE": str(release),
                **({"APEX_WAIT_FOR": str(ups["isolated"])} if name == "host" else {}),
            },
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name, command in commands.items()
    }
    names: dict[str, str] = {}
    try:
        wait_for(
            lambda: (
                all(up.exists() for up in ups.values())
                or any(run.poll() is not None for run in runs.values())
            ),
            180,
            "both stacks to be up",
        )
        names = {name: _project_of(up.read_text()) for name, up in ups.items() if up.exists()}
        assert len(names) == 2, {n: r.poll() for n, r in runs.items()}
        assert names["isolated"].startswith(f"apexrun-{pid + 1}-")  # a pid dead out here
        assert containers_of(names["isolated"])
        assert containers_of(names["host"])
        release.touch()
        outputs = {name: run.communicate(timeout=120)[0] for name, run in runs.items()}
        for name, run in runs.items():
            assert run.returncode == 0, f"{name} run:\n{outputs[name]}"
        # Neither run took the other's stack for a dead one (a stack some earlier, killed
        # run of this host left behind may be reaped: that is not these two).
        reaped = [line for line in "".join(outputs.values()).splitlines() if "left behind" in line]
        assert not [line for line in reaped if any(n in line for n in names.values())], reaped
        for name in names.values():
            assert_gone(name)
    finally:
        release.touch()
        for run in runs.values():
            if run.poll() is None:
                run.kill()
                run.wait(timeout=30)
        for name in names.values():
            _docker("compose", "-p", name, "down", "--volumes", "--timeout", "2")
