"""One stack per run, whoever asks first; torn down by the process that owns the run.

The controller (or the single process without xdist) names the run's compose project and
hands the name to xdist workers. The stack starts lazily, on the first test that needs it,
under a file lock so that `pytest -n 4` still creates exactly one compose project; the
state file tells later workers the endpoints (or the start error, so they fail fast
instead of retrying). The controller tears the stack down at the end, on failure, Ctrl-C
and SIGTERM. Stacks of crashed runs are found by name (`apexrun-<pid>-…` whose pid is gone)
and removed before a new one starts.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil
from filelock import FileLock

from pytest_apex.targets.base import Target
from pytest_apex.targets.compose import ComposeTarget, ProgressCallback, _parse_ps, _text
from pytest_apex.targets.errors import StackStartError
from pytest_apex.targets.external import ExternalTarget
from pytest_apex.targets.runner import CommandRunner, SubprocessRunner

if TYPE_CHECKING:
    from pytest_apex.config import ApexSettings

RUN_PREFIX = "apexrun"
KEEP_PREFIX = "apexkeep"
_RUN_NAME = re.compile(rf"^{RUN_PREFIX}-(\d+)-[0-9a-f]+")


def new_project_name(keep: bool = False, pid: int | None = None) -> str:
    """A compose project name unique to this run; kept stacks are never reaped."""
    if keep:
        return f"{KEEP_PREFIX}-{secrets.token_hex(3)}"
    return f"{RUN_PREFIX}-{pid or os.getpid()}-{secrets.token_hex(3)}"


def stale_projects(
    runner: CommandRunner, pid_alive: Callable[[int], bool] = psutil.pid_exists
) -> list[str]:
    """Compose projects of earlier runs of this plugin whose process no longer exists."""
    result = runner(["docker", "compose", "ls", "--all", "--format", "json"], timeout=60)
    if result.returncode != 0:
        return []
    stale = []
    for project in _parse_ps(_text(result.stdout)):
        match = _RUN_NAME.match(project.get("Name", ""))
        if match and not pid_alive(int(match.group(1))):
            stale.append(project["Name"])
    return stale


def reap_stale(runner: CommandRunner, progress: ProgressCallback) -> list[str]:
    reaped = stale_projects(runner)
    for project in reaped:
        progress(f"removing stack {project} left behind by a crashed run")
        runner(
            [
                "docker",
                "compose",
                "--project-name",
                project,
                "down",
                "--volumes",
                "--remove-orphans",
                "--timeout",
                "5",
            ],
            timeout=300,
        )
    return reaped


def kept_project_for(compose_file: Path, runner: CommandRunner) -> str | None:
    """The newest running kept stack of this compose file, for --apex-reuse."""
    result = runner(["docker", "compose", "ls", "--format", "json"], timeout=60)
    if result.returncode != 0:
        return None
    candidates = [
        p["Name"]
        for p in _parse_ps(_text(result.stdout))
        if p.get("Name", "").startswith(KEEP_PREFIX)
        and str(compose_file.resolve()) in p.get("ConfigFiles", "")
        and "running" in p.get("Status", "")
    ]
    return sorted(candidates)[-1] if candidates else None


@dataclass
class _State:
    """What the process that started the stack tells everyone else."""

    status: str  # "starting" | "up" | "failed"
    project: str
    reused: bool = False
    error: str = ""

    @classmethod
    def read(cls, path: Path) -> _State | None:
        try:
            return cls(**json.loads(path.read_text()))
        except (FileNotFoundError, json.JSONDecodeError, TypeError):
            return None

    def write(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.__dict__))
        tmp.replace(path)


class TargetSession:
    """The run's target: created at configure time, started on first use, stopped at the end."""

    def __init__(
        self,
        settings: ApexSettings,
        project: str,
        state_dir: Path,
        *,
        is_controller: bool,
        runner: CommandRunner | None = None,
        progress: ProgressCallback | None = None,
    ) -> None:
        self.settings = settings
        self.project = project
        self.state_dir = state_dir
        self.is_controller = is_controller
        self.runner: CommandRunner = runner or SubprocessRunner()
        self.progress: ProgressCallback = progress or _stderr_progress
        self._target: Target | None = None

    # -- construction ----------------------------------------------------------------------

    @classmethod
    def for_controller(cls, settings: ApexSettings, **kwargs: Any) -> TargetSession:
        project = new_project_name(keep=settings.keep)
        state_dir = Path(tempfile.gettempdir()) / "pytest-apex" / project
        session = cls(settings, project, state_dir, is_controller=True, **kwargs)
        _install_sigterm_handler()
        return session

    @classmethod
    def from_workerinput(
        cls, settings: ApexSettings, workerinput: Mapping[str, Any], **kwargs: Any
    ) -> TargetSession:
        return cls(
            settings,
            str(workerinput["apex_project"]),
            Path(workerinput["apex_state_dir"]),
            is_controller=False,
            **kwargs,
        )

    def workerinput(self) -> dict[str, str]:
        return {"apex_project": self.project, "apex_state_dir": str(self.state_dir)}

    # -- use -------------------------------------------------------------------------------

    @property
    def _state_file(self) -> Path:
        return self.state_dir / "state.json"

    def acquire(self) -> Target:
        """The running target, started now if no process of this run has started it yet."""
        if self._target is not None:
            return self._target
        if self.settings.is_external:
            self._target = ExternalTarget(self.settings.urls)
            return self._target
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.state_dir / "lock")):
            state = _State.read(self._state_file)
            if state is None:
                state = self._start()
            if state.status == "starting":
                raise StackStartError(
                    f"the start of stack {state.project} was interrupted; rerun the tests"
                )
            if state.status == "failed":
                raise StackStartError(state.error)
            self._target = self._compose_target(state.project)
        return self._target

    def describe(self) -> dict[str, str]:
        info = {"target": "external" if self.settings.is_external else f"compose:{self.project}"}
        if isinstance(self._target, ComposeTarget):
            info.update({f"image.{s}": i[:19] for s, i in self._target.image_ids().items()})
        return info

    def finish(self) -> None:
        """Controller only: stop the stack unless it is kept (or was reused)."""
        if not self.is_controller or self.settings.is_external:
            return
        state = _State.read(self._state_file)
        if state is None:
            return  # no test needed the stack
        target = self._compose_target(state.project)
        if self.settings.keep or state.reused:
            self.progress(
                f"stack {state.project} kept running. Endpoints: "
                + ", ".join(f"{s}={u}" for s, u in sorted(target.endpoints().items()))
                + f"\n  reuse it: pytest --apex-reuse ...\n  stop it:  docker compose "
                f"--project-name {state.project} -f {target.compose_file} down --volumes"
            )
            return
        self.progress(f"stopping stack {state.project}")
        target.stop()
        self._state_file.unlink(missing_ok=True)

    # -- internals -------------------------------------------------------------------------

    def _compose_target(self, project: str) -> ComposeTarget:
        assert self.settings.stack is not None, "compose target without a compose file"
        env = {"APEX_FAULTS": ",".join(self.settings.faults)}
        return ComposeTarget(
            self.settings.stack, project, env=env, runner=self.runner, progress=self.progress
        )

    def _start(self) -> _State:
        assert self.settings.stack is not None
        if self.settings.reuse:
            kept = kept_project_for(self.settings.stack, self.runner)
            if kept:
                self.progress(f"reusing running stack {kept}")
                state = _State("up", kept, reused=True)
                state.write(self._state_file)
                return state
            self.progress("no running kept stack to reuse; starting a new one")
        reap_stale(self.runner, self.progress)
        target = self._compose_target(self.project)
        # Written first so that an interrupted start is still torn down by finish().
        _State("starting", self.project).write(self._state_file)
        try:
            target.start()
            state = _State("up", self.project)
        except StackStartError as exc:
            state = _State("failed", self.project, error=str(exc))
        state.write(self._state_file)
        return state


def _stderr_progress(line: str) -> None:
    print(f"[apex] {line}", file=sys.stderr, flush=True)


def _install_sigterm_handler() -> None:
    """Turn SIGTERM into KeyboardInterrupt so pytest unwinds and the stack is torn down."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None):
        return  # somebody else handles it; don't take it from them

    def _on_sigterm(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, _on_sigterm)
