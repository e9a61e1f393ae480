"""Integration: each stack's watchdog, against a real Docker engine (skipped without one).

A run killed outright (SIGKILL: no teardown, no later run) must not leave its stack behind;
a kept stack must outlive its watchdog; and the watchdog itself must leave nothing behind.
The measured times are printed (`-s`) for the README.
"""

from __future__ import annotations

import re
import signal
import time

import pytest

from pytest_apex.targets.watchdog import WATCHDOG_LABEL
from tests.plugin import test_stack_lifecycle
from tests.plugin.test_stack_lifecycle import (
    BLOCKS,
    PROJECT_LABEL,
    STACKS,
    Inner,
    Project,
    _docker,
    _project_of,
    containers_of,
    pytestmark,  # noqa: F401  (integration, skipped without Docker, one xdist group)
    wait_for,
)

# The lifecycle tests' fixtures: a directory with the small stack, a clean environment.
small = test_stack_lifecycle.small
clean_env = test_stack_lifecycle.clean_env

# Records, while the stack is up, which watchdog guards it.
RECORDS_ITS_WATCHDOG = """
import os, subprocess
from pathlib import Path

def test_uses_the_stack(apex_target):
    out = Path(os.environ["APEX_TEST_OUT"])
    out.mkdir(exist_ok=True)
    project = apex_target.name.removeprefix("compose:")
    watchdog = subprocess.run(
        ["docker", "ps", "--quiet", "--filter", f"label={WATCHDOG_LABEL}={project}"],
        capture_output=True, text=True, check=True,
    ).stdout.split()
    (out / "watchdog.txt").write_text(" ".join(watchdog))
    (out / "up.txt").write_text(apex_target.name)
""".replace("{WATCHDOG_LABEL}", WATCHDOG_LABEL)


def watchdogs_of(project: str) -> list[str]:
    return _docker(
        "ps", "--all", "--quiet", "--filter", f"label={WATCHDOG_LABEL}={project}"
    ).split()


def leftovers_of(project: str) -> list[str]:
    """Containers, networks and volumes of the project, and its watchdog."""
    label = f"label={PROJECT_LABEL}={project}"
    return [
        *containers_of(project),
        *_docker("network", "ls", "--quiet", "--filter", label).split(),
        *_docker("volume", "ls", "--quiet", "--filter", label).split(),
        *watchdogs_of(project),
    ]


def test_a_run_killed_outright_has_its_stack_removed_by_the_watchdog(small: Project) -> None:
    small.pytester.makepyfile(test_stack=BLOCKS)
    inner = Inner(small.pytester)
    name = ""
    try:
        up = small.out / "up.txt"
        wait_for(lambda: up.exists() or inner.proc.poll() is not None, 120, "the stack to be up")
        assert up.exists(), inner.output
        name = _project_of(up.read_text())
        assert containers_of(name)
        assert watchdogs_of(name), "no watchdog guards the stack"
        inner.proc.send_signal(signal.SIGKILL)  # no teardown, no handler, nothing
        killed = time.monotonic()
        inner.finish(timeout=30)
        # Nothing else runs: no later run reaps it. Within 60 s nothing of it is left.
        wait_for(lambda: not containers_of(name), 60, f"no container of {name}")
        gone_after = time.monotonic() - killed
        wait_for(lambda: not leftovers_of(name), 60 - gone_after, f"nothing left of {name}")
        print(f"stack gone {gone_after:.1f} s after kill -9")
        assert gone_after < 30
    finally:
        if inner.proc.poll() is None:
            inner.proc.kill()
        small.cleanup()
        for watchdog in watchdogs_of(name) if name else []:
            _docker("rm", "--force", watchdog)


def test_a_kept_stack_outlives_its_watchdog(small: Project) -> None:
    small.pytester.makepyfile(test_stack=RECORDS_ITS_WATCHDOG)
    kept = ""
    try:
        small.run("--apex-keep").assert_outcomes(passed=1)
        kept = _project_of((small.out / "up.txt").read_text())
        assert (small.out / "watchdog.txt").read_text().split(), "no watchdog guarded it"
        # The run's normal exit told the watchdog the stack is kept: it leaves at once,
        # without removing anything.
        wait_for(lambda: not watchdogs_of(kept), 20, f"the watchdog of {kept} to leave")
        assert containers_of(kept)
        assert all(state == "running" for state in _states(kept)), _states(kept)
    finally:
        if kept:
            _docker("compose", "-p", kept, "down", "--volumes", "--timeout", "2")
            for watchdog in watchdogs_of(kept):
                _docker("rm", "--force", watchdog)


def test_a_normal_run_leaves_no_watchdog_behind(small: Project) -> None:
    small.pytester.makepyfile(test_stack=RECORDS_ITS_WATCHDOG)
    small.run().assert_outcomes(passed=1)
    name = _project_of((small.out / "up.txt").read_text())
    assert (small.out / "watchdog.txt").read_text().split(), "no watchdog guarded it"
    wait_for(lambda: not leftovers_of(name), 20, f"nothing left of {name}")


def _states(project: str) -> list[str]:
    return _docker(
        "ps", "--all", "--format", "{{.State}}", "--filter", f"label={PROJECT_LABEL}={project}"
    ).split()


def test_a_run_killed_outright_during_bring_up_leaves_nothing(
    pytester: pytest.Pytester, clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A stack that stays "starting" for a minute: the kill lands while `up --wait` runs, and
    # the orphaned `docker compose up` goes on without its run.
    project = Project(pytester, STACKS / "never-healthy.yml")
    monkeypatch.setenv("APEX_TEST_OUT", str(project.out))
    monkeypatch.setenv("APEX_STUCK_RETRIES", "60")
    pytester.makepyfile(test_stack=BLOCKS)
    inner = Inner(pytester)
    name = ""
    try:
        inner.wait_for_output(r"\[apex\]   stuck: \S+ -> starting", 60)
        started = re.search(r"starting stack (apexrun-\d+-[0-9a-f]+)", inner.output)
        assert started, inner.output
        name = started.group(1)
        assert watchdogs_of(name), "no watchdog guards the stack"
        inner.proc.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        inner.finish(timeout=30)
        wait_for(lambda: not leftovers_of(name), 60, f"nothing left of {name}")
        print(f"stack killed during bring-up gone {time.monotonic() - killed:.1f} s after")
    finally:
        if inner.proc.poll() is None:
            inner.proc.kill()
        project.cleanup()
        for watchdog in watchdogs_of(name) if name else []:
            _docker("rm", "--force", watchdog)
