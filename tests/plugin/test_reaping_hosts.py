"""Two fake hosts on one fake Docker engine: neither run ever reaps the other host's stacks.

The engine remembers each project's containers with the labels compose would give them
(read from the override file the run passes with `-f`); each host has its own identity
and its own view of which pids are alive, as two CI jobs sharing an engine socket do. The
pids are the same number on both hosts on purpose: that collision is what the old
name-based reaper got wrong.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from pytest_apex.settings import ApexSettings
from pytest_apex.targets.identity import LABEL_PREFIX, RunIdentity, process_start_time
from pytest_apex.targets.lifecycle import TargetSession
from pytest_apex.targets.projects import new_project_name
from pytest_apex.targets.reaping import _IDENTITY_LABELS

Response = subprocess.CompletedProcess[bytes]
PID = 100  # every run below has this pid, each in its own host's namespace


def _done(args: Sequence[str], out: str = "", rc: int = 0) -> Response:
    return subprocess.CompletedProcess(list(args), rc, out.encode(), b"")


class FakeEngine:
    """One Docker engine shared by every host: projects, their labels, and what was removed."""

    def __init__(self) -> None:
        self.projects: dict[str, dict[str, str]] = {}  # project -> its containers' labels
        self.removed: list[str] = []

    def __call__(self, args: Sequence[str], **_: Any) -> Response:
        cmd = list(args)
        project = cmd[cmd.index("--project-name") + 1] if "--project-name" in cmd else ""
        if cmd[:2] == ["docker", "compose"] and "up" in cmd:
            override = next(Path(f) for f in cmd if f.endswith(".json"))
            labels = json.loads(override.read_text())["services"]["web"]["labels"]
            self.projects[project] = labels
        elif cmd[:2] == ["docker", "compose"] and "down" in cmd:
            if self.projects.pop(project, None) is not None:
                self.removed.append(project)
        elif "--services" in cmd:
            return _done(cmd, "web\n")
        elif cmd[:2] == ["docker", "compose"] and "ps" in cmd and project in self.projects:
            entry = {"ID": f"id-{project}", "Service": "web", "State": "running"}
            return _done(cmd, json.dumps({**entry, "Health": "healthy", "Publishers": []}))
        elif cmd[:3] == ["docker", "ps", "--all"] and "--format" in cmd:
            rows = [
                "\t".join([p, *(labels[f"{LABEL_PREFIX}{n}"] for n in _IDENTITY_LABELS)])
                for p, labels in self.projects.items()
            ]
            return _done(cmd, "\n".join(rows))
        elif cmd[:3] == ["docker", "ps", "--all"]:  # a project's containers, by label
            wanted = cmd[-1].rpartition("=")[2]
            return _done(cmd, f"id-{wanted}\n" if wanted in self.projects else "")
        elif cmd[:2] == ["docker", "run"]:
            return _done(cmd, rc=125)  # no watchdog in this fake
        elif cmd[:3] == ["docker", "compose", "ls"]:
            return _done(cmd, "[]")
        return _done(cmd)


class Host:
    """A machine (or CI container) with its own identity, /tmp and live processes."""

    def __init__(self, name: str, tmp: Path, engine: FakeEngine) -> None:
        self.name = name
        self.tmp = tmp / name
        self.tmp.mkdir()
        self.engine = engine
        self.alive: dict[int, float] = {}  # pid -> start time
        self.lines: list[str] = []

    def run(self, compose_file: Path, started: float) -> TargetSession:
        """A run started now on this host, with pid PID, whose stack is brought up."""
        self.alive[PID] = started
        project = new_project_name(pid=PID)
        identity = RunIdentity(
            host=f"host-{self.name}",
            boot="boot-1",
            pid_namespace="pid:[4026531836]",  # the initial namespace: same on every host
            uid=os.getuid(),
            pid=PID,
            started=started,
            run=project,
        )
        root = self.tmp / f"pytest-apex-{os.getuid()}"
        root.mkdir(mode=0o700, exist_ok=True)
        session = TargetSession(
            ApexSettings(stack=compose_file),
            project,
            root / project,
            is_controller=True,
            identity=identity,
            runner=self.engine,
            progress=self.lines.append,
            start_time_of=self.alive.get,
        )
        session.acquire()
        return session

    def crash(self) -> None:
        """The run dies without a teardown (its pid is free again)."""
        self.alive.pop(PID)


@pytest.fixture
def compose_file(tmp_path: Path) -> Path:
    path = tmp_path / "stack" / "compose.yml"
    path.parent.mkdir()
    path.write_text("services: {web: {image: x}}\n")
    return path


def test_two_hosts_on_one_engine_never_reap_each_others_stacks(
    tmp_path: Path, compose_file: Path
) -> None:
    engine = FakeEngine()
    a, b = Host("a", tmp_path, engine), Host("b", tmp_path, engine)

    first_a = a.run(compose_file, started=1.0)
    a.crash()  # host a's run is gone; on host b, pid PID is nobody at all
    first_b = b.run(compose_file, started=2.0)
    assert set(engine.projects) == {first_a.project, first_b.project}
    assert engine.removed == []
    assert not any("removing" in line for line in b.lines)

    # Host b's run crashes too; host b's next run (same pid, later start) reaps only it.
    b.crash()
    second_b = b.run(compose_file, started=3.0)
    assert engine.removed == [first_b.project]
    assert (
        f"removing stack {first_b.project} left behind by a crashed run: "
        f"its run (pid {PID}) is gone; that pid now belongs to another process"
    ) in b.lines

    # Host a's next run reaps host a's dead stack, and leaves host b's live one alone.
    second_a = a.run(compose_file, started=4.0)
    assert engine.removed == [first_b.project, first_a.project]
    assert set(engine.projects) == {second_a.project, second_b.project}

    # Each run's own teardown removes its own stack only.
    second_a.finish()
    assert set(engine.projects) == {second_b.project}
    second_b.finish()
    assert engine.projects == {}


def test_a_stack_labelled_by_another_user_is_left_alone(tmp_path: Path, compose_file: Path) -> None:
    engine = FakeEngine()
    host = Host("a", tmp_path, engine)
    theirs = host.run(compose_file, started=1.0)
    owner = RunIdentity.from_labels(engine.projects[theirs.project])
    assert owner is not None
    other_user = dataclasses.replace(owner, uid=owner.uid + 1)
    engine.projects[theirs.project] = other_user.labels()
    host.crash()
    host.run(compose_file, started=2.0)
    assert theirs.project in engine.projects
    assert engine.removed == []


def test_the_real_start_times_tell_a_live_run_from_a_dead_one() -> None:
    me = RunIdentity.of_process(os.getpid(), "apexrun-1-abcdef")
    assert me.host
    assert me.boot
    assert me.pid_namespace.startswith("pid:[")
    assert me.why_dead(me, process_start_time) is None  # alive, as started
    child = subprocess.Popen(["sleep", "30"])
    owner = RunIdentity.of_process(child.pid, "apexrun-2-abcdef")
    assert me.why_dead(owner, process_start_time) is None
    child.kill()
    child.wait()
    assert me.why_dead(owner, process_start_time) == f"its run (pid {child.pid}) is gone"
