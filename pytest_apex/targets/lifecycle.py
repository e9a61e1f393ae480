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

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import psutil
from filelock import FileLock, Timeout

from pytest_apex.redaction import redact
from pytest_apex.reference import FAULTS_ENV, PORT_SCHEMES
from pytest_apex.targets.base import Target
from pytest_apex.targets.compose import (
    ComposeTarget,
    ProgressCallback,
    _parse_ps,
    _text,
    project_containers,
)
from pytest_apex.targets.errors import DockerUnavailable, StackStartError
from pytest_apex.targets.external import ExternalTarget
from pytest_apex.targets.runner import CommandRunner, CommandTimedOut, SubprocessRunner

if TYPE_CHECKING:
    from pytest_apex.settings import ApexSettings

RUN_PREFIX = "apexrun"
KEEP_PREFIX = "apexkeep"
_RUN_NAME = re.compile(rf"^{RUN_PREFIX}-(\d+)-[0-9a-f]+$")
# A worker waits this long for another process of the run to finish starting the stack
# (a cold build plus the health checks fit well within it).
_LOCK_TIMEOUT_S = 1200.0
_TEARDOWN_ATTEMPTS = 3


def state_root() -> Path:
    """This user's directory for the state of runs: `<tmp>/pytest-apex-<uid>`.

    Per user, because what is in it decides which compose project a run tears down: in a
    directory shared between users, another local user could plant a state file (or a
    symlink) and have our run remove their choice of stack.
    """
    return Path(tempfile.gettempdir()) / f"pytest-apex-{os.getuid()}"


def _private_dir(path: Path, *, create: bool) -> bool:
    """Whether `path` exists, after making sure that only this user can write to it.

    Created with mode 0700 when `create` is set. Raises `StackStartError` when it is not
    a directory of ours that nobody else can write to: it is refused, not repaired, since
    whoever could write to it may already have put something in it.
    """
    if create:
        with contextlib.suppress(FileExistsError):
            path.mkdir(mode=0o700, parents=False)
    try:
        info = path.lstat()  # lstat: a symlink planted in its place is refused, not followed
    except FileNotFoundError:
        return False
    if not stat.S_ISDIR(info.st_mode):
        problem = "is not a directory (a symlink?)"
    elif info.st_uid != os.getuid():
        problem = f"is owned by uid {info.st_uid}, not by you (uid {os.getuid()})"
    elif info.st_mode & 0o022:
        problem = f"is writable by other users (mode {stat.S_IMODE(info.st_mode):o})"
    else:
        return True
    raise StackStartError(
        f"refusing to use the state directory {path}: it {problem}. Whoever can write to it "
        "can choose the stack this run tears down. Remove it (or make it yours with mode "
        "0700) and rerun."
    )


def new_project_name(keep: bool = False, pid: int | None = None) -> str:
    """A compose project name unique to this run.

    `apexrun-<pid>-<random>` names the process that owns the stack, so a later run can tell
    a crashed run's stack (pid gone) from a live one. Kept stacks (`apexkeep-<time>-<random>`)
    are never reaped; the hex start time makes the newest one sort last, for --apex-reuse.
    """
    if keep:
        return f"{KEEP_PREFIX}-{int(time.time()):08x}-{secrets.token_hex(2)}"
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
        match = _RUN_NAME.match(str(project.get("Name", "")))
        if match and not pid_alive(int(match.group(1))):
            stale.append(str(project["Name"]))
    return stale


def down_by_name(runner: CommandRunner, project: str, cwd: Path | None = None) -> None:
    """`docker compose -p NAME down` (no compose file needed), then remove any straggler.

    By name only, because the compose file may have changed or gone since the stack was
    started. `cwd` should hold no compose file: compose would read one there.
    """
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
        cwd=str(cwd) if cwd else None,
        timeout=300,
    )
    leftover = project_containers(runner, project)
    if leftover:
        runner(["docker", "rm", "--force", "--volumes", *leftover], timeout=120)


def reap_stale(
    runner: CommandRunner,
    progress: ProgressCallback,
    pid_alive: Callable[[int], bool] = psutil.pid_exists,
    cwd: Path | None = None,
) -> list[str]:
    """Remove the stacks that crashed runs of this plugin left behind."""
    reaped = stale_projects(runner, pid_alive)
    for project in reaped:
        progress(f"removing stack {project} left behind by a crashed run")
        down_by_name(runner, project, cwd)
    return reaped


def kept_project_for(compose_file: Path, runner: CommandRunner) -> str | None:
    """The newest running kept stack of this compose file, for --apex-reuse."""
    result = runner(["docker", "compose", "ls", "--format", "json"], timeout=60)
    if result.returncode != 0:
        return None
    wanted = str(compose_file.resolve())
    candidates = [
        str(p["Name"])
        for p in _parse_ps(_text(result.stdout))
        if str(p.get("Name", "")).startswith(f"{KEEP_PREFIX}-")
        and wanted in str(p.get("ConfigFiles", "")).split(",")
        and "running" in str(p.get("Status", ""))
    ]
    return sorted(candidates)[-1] if candidates else None


@dataclass
class _State:
    """What the process that started the stack tells everyone else.

    Written to `state.json` in the run's state directory: "starting" before `up`, so an
    interrupted start is still torn down; then "up", or "failed" with the error, so other
    workers fail fast with the same message instead of starting again.
    """

    status: str  # "starting" | "up" | "failed"
    project: str
    reused: bool = False
    error: str = ""
    error_kind: str = ""  # "DockerUnavailable" or "StackStartError"

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

    def raise_error(self) -> NoReturn:
        if self.status == "starting":
            raise StackStartError(
                f"the start of stack {self.project} was interrupted (the process starting it "
                "died); it is removed at the end of this run. Rerun the tests."
            )
        if self.error_kind == "DockerUnavailable":
            raise DockerUnavailable(self.error)
        raise StackStartError(self.error)


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
        pid_alive: Callable[[int], bool] = psutil.pid_exists,
    ) -> None:
        self.settings = settings
        self.project = project
        self.state_dir = state_dir
        self.is_controller = is_controller
        self.runner: CommandRunner = runner or SubprocessRunner()
        self.progress: ProgressCallback = progress or _stderr_progress
        self.pid_alive = pid_alive
        self._target: Target | None = None
        self._previous_sigterm: Any = None

    # -- construction ----------------------------------------------------------------------

    @classmethod
    def for_controller(cls, settings: ApexSettings, **kwargs: Any) -> TargetSession:
        project = new_project_name(keep=settings.keep)
        state_dir = state_root() / project
        session = cls(settings, project, state_dir, is_controller=True, **kwargs)
        if not settings.is_external:
            session._previous_sigterm = _install_sigterm_handler()
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
        _private_dir(self.state_dir.parent, create=True)
        self.state_dir.mkdir(mode=0o700, exist_ok=True)
        try:
            with FileLock(str(self.state_dir / "lock"), timeout=_LOCK_TIMEOUT_S):
                state = _State.read(self._state_file)
                if state is None:
                    state = self._start()
        except Timeout:
            raise StackStartError(
                f"gave up after {_LOCK_TIMEOUT_S:.0f} s waiting for another process of this "
                f"run to start stack {self.project}"
            ) from None
        if state.status != "up":
            state.raise_error()
        self._target = self._compose_target(state.project)
        return self._target

    def describe(self) -> dict[str, str]:
        info = {"target": "external" if self.settings.is_external else f"compose:{self.project}"}
        target = self._target
        if target is None and not self.settings.is_external:
            # Under xdist the controller never acquires; the state file says what a worker
            # started (or reused), so the report still names the stack and its images.
            state = _State.read(self._state_file)
            if state is not None and state.status == "up":
                target = self._compose_target(state.project)
        if isinstance(target, ComposeTarget):
            info["target"] = target.name  # the reused stack's name, when reused
            info.update({f"image.{s}": i[:19] for s, i in target.image_ids().items()})
        return info

    def finish(self) -> None:
        """Controller only: stop the stack unless it is kept (or was reused).

        Never raises: it runs in pytest_unconfigure, after the run's result is known, and a
        teardown problem must not hide that result; it is reported with the command that
        removes the stack by hand. Further Ctrl-C / SIGTERM are held off until it is done.
        """
        if not self.is_controller or self.settings.is_external:
            return
        project = self.project
        ours = False  # only a directory that passed the check is read and removed
        lock: FileLock | None = None
        try:
            ours = _private_dir(self.state_dir.parent, create=False) and self.state_dir.is_dir()
            if not ours:
                return  # no test needed the stack
            lock = self._teardown_lock()
            state = _State.read(self._state_file)
            if state is None:
                return  # no test needed the stack
            project = state.project
            with _signals_held(self.progress, f"removing stack {state.project}"):
                if state.status == "up" and (self.settings.keep or state.reused):
                    self._announce_kept(state.project)
                elif state.status == "failed" and not project_containers(
                    self.runner, state.project
                ):
                    pass  # removed when it failed (see _start)
                else:
                    # Also an interrupted start ("starting"): some containers may exist.
                    self._teardown(state.project)
        except Exception as exc:
            self.progress(
                f"could not finish stack {project}: {type(exc).__name__}: {exc}\n"
                f"  remove it by hand: docker compose -p {project} down --volumes"
            )
        finally:
            if lock is not None:
                lock.release()
            if ours:
                shutil.rmtree(self.state_dir, ignore_errors=True)
            _restore_sigterm_handler(self._previous_sigterm)
            self._previous_sigterm = None

    # -- internals -------------------------------------------------------------------------

    def _teardown_lock(self) -> FileLock | None:
        """The run's start lock, held while finish() reads the state and tears down.

        A worker may still be starting the stack (it holds the lock from before `up` until
        the state says "up" or "failed"); reading without the lock could see no state, or
        "starting", and leave the stack that is about to come up behind. The wait is
        bounded: on timeout (or Ctrl-C) the teardown goes ahead on what the state says.
        """
        lock = FileLock(str(self.state_dir / "lock"), timeout=_LOCK_TIMEOUT_S)
        try:
            lock.acquire(blocking=False)
            return lock
        except Timeout:
            pass
        self.progress(
            f"waiting for another process of this run to finish starting stack "
            f"{self.project} before removing it (at most {_LOCK_TIMEOUT_S:g} s)"
        )
        try:
            lock.acquire()
            return lock
        except Timeout:
            reason = f"it did not finish within {_LOCK_TIMEOUT_S:g} s"
        except KeyboardInterrupt:
            reason = "interrupted"
        self.progress(f"stopped waiting ({reason}); removing stack {self.project} anyway")
        return None

    def _compose_target(self, project: str) -> ComposeTarget:
        assert self.settings.stack is not None, "compose target without a compose file"
        env = {FAULTS_ENV: ",".join(self.settings.faults)}
        return ComposeTarget(
            self.settings.stack,
            project,
            env=env,
            runner=self.runner,
            progress=self.progress,
            port_schemes=PORT_SCHEMES,
        )

    def _start(self) -> _State:
        """Start (or find, with --apex-reuse) the stack; record the outcome in the state file.

        Raises the error itself (with its diagnoses) in this process after recording it.
        """
        assert self.settings.stack is not None
        target = self._compose_target(self.project)
        try:
            target.check_engine()
            if self.settings.reuse:
                kept = kept_project_for(self.settings.stack, self.runner)
                if kept:
                    self.progress(f"reusing running stack {kept}")
                    state = _State("up", kept, reused=True)
                    state.write(self._state_file)
                    return state
                self.progress("no running kept stack to reuse; starting a new one")
            reap_stale(self.runner, self.progress, self.pid_alive, cwd=self.state_dir)
            self._remove_stale_state_dirs()
            target.validate()
        except Exception as exc:
            self._fail_start(exc)
        # Written before `up` so that an interrupted start is still torn down by finish().
        _State("starting", self.project).write(self._state_file)
        try:
            target.up()
        except Exception as exc:
            # Removed now rather than at the end of the run: nothing can use a broken
            # stack, and the error already holds what its containers had to say.
            self.progress(f"stack {self.project} did not come up; removing it")
            try:
                self._teardown(self.project)
            except Exception as teardown_error:  # the start error is the one to report
                self.progress(f"could not remove stack {self.project}: {teardown_error}")
            self._fail_start(exc)
        state = _State("up", self.project)
        state.write(self._state_file)
        return state

    def _remove_stale_state_dirs(self) -> None:
        """State directories of crashed runs (next to ours, by the same naming rule)."""
        for path in self.state_dir.parent.glob(f"{RUN_PREFIX}-*"):
            match = _RUN_NAME.match(path.name)
            if match and path != self.state_dir and not self.pid_alive(int(match.group(1))):
                shutil.rmtree(path, ignore_errors=True)

    def _fail_start(self, exc: Exception) -> NoReturn:
        """Record a failed start for the other workers, then raise it here.

        Any exception, not only ours: without a "failed" state every other worker would
        try the same start again (and wait on the lock for it). A timeout from a runner
        that is not ours becomes the `DockerUnavailable` the real runner raises, so the
        test fails with a sentence rather than a traceback; an unexpected error is raised
        as it is in this process (its traceback is the useful part), the others get its
        text. The stored text is redacted: it can quote logs and commands with secrets.
        """
        error: Exception = exc
        if isinstance(exc, subprocess.TimeoutExpired) and not isinstance(exc, DockerUnavailable):
            error = CommandTimedOut.from_expired(exc)
        kind = "DockerUnavailable" if isinstance(error, DockerUnavailable) else "StackStartError"
        text = str(error)
        if not isinstance(error, DockerUnavailable | StackStartError):
            text = f"starting stack {self.project} failed: {type(exc).__name__}: {exc}"
        _State("failed", self.project, error=redact(text), error_kind=kind).write(self._state_file)
        if error is exc:
            raise exc
        raise error from exc

    def _teardown(self, project: str) -> None:
        """`down` the project, and make sure that no container of it is left."""
        self.progress(f"stopping stack {project}")
        started = time.monotonic()
        target = self._compose_target(project)
        target.stop()
        for _ in range(_TEARDOWN_ATTEMPTS):
            # A container whose create was in flight when `up` was killed can appear after
            # the first `down` looked; and `down` with a changed compose file can miss some.
            if not target.remaining_containers():
                break
            down_by_name(self.runner, project, self.state_dir)
        left = target.remaining_containers()
        if left:
            self.progress(
                f"stack {project} still has {len(left)} container(s); remove them with: "
                f"docker compose -p {project} down --volumes"
            )
            return
        self.progress(f"stack {project} removed in {time.monotonic() - started:.1f} s")

    def _announce_kept(self, project: str) -> None:
        target = self._compose_target(project)
        endpoints = target.endpoints()
        width = max((len(s) for s in endpoints), default=0)
        lines = [f"stack {project} kept running:"]
        lines += [f"  {s:<{width}}  {url}" for s, url in sorted(endpoints.items())]
        lines += [
            f"  reuse it: pytest --apex-reuse   (attaches to the newest kept stack of "
            f"{target.compose_file.name})",
            f"  stop it:  docker compose -p {project} down --volumes",
        ]
        self.progress("\n".join(lines))


def _stderr_progress(line: str) -> None:
    print(f"[apex] {line}", file=sys.stderr, flush=True)


def _install_sigterm_handler() -> Any:
    """Turn SIGTERM into KeyboardInterrupt so pytest unwinds and the stack is torn down.

    Returns the handler it replaced (None when it installed nothing), for `finish` to put
    back: an in-process pytest run (pytester) must not leave its handler in the host.
    """
    if threading.current_thread() is not threading.main_thread():
        return None
    previous = signal.getsignal(signal.SIGTERM)
    if previous not in (signal.SIG_DFL, None):
        return None  # somebody else handles it; don't take it from them
    signal.signal(signal.SIGTERM, _on_sigterm)
    return previous


def _on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _restore_sigterm_handler(previous: Any) -> None:
    if previous is None or threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is _on_sigterm:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _signals_held(progress: ProgressCallback, doing: str) -> Iterator[None]:
    """Ignore Ctrl-C and SIGTERM while the stack is torn down, saying so.

    The first one already stopped the tests; another one arriving mid-`down` would leave
    half a stack behind. `down` is bounded (`--timeout 5` per container), so this is short.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _held(signum: int, frame: object) -> None:
        progress(f"{doing}; please wait (signal {signum} ignored until it is done)")

    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, _held)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
