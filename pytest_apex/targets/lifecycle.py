"""One stack per run, whoever asks first; torn down by the process that owns the run.

The controller (or the single process without xdist) names the run's compose project and
hands the name, and its own identity, to xdist workers. The stack starts lazily, on the
first test that needs it, under a file lock so that `pytest -n 4` still creates exactly one
compose project; the state file (`state`) tells later workers the endpoints (or the start
error, so they fail fast instead of retrying). Before it starts, stacks that dead runs of
this host left behind are removed (`reaping`); while it runs, a watchdog container removes
it if every process of the run disappears (`watchdog`); at the end the controller tears it
down within one deadline, also on failure, Ctrl-C and SIGTERM (`signals`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from filelock import FileLock, Timeout

from pytest_apex.redaction import redact
from pytest_apex.targets import watchdog
from pytest_apex.targets.base import ServedBy, Target
from pytest_apex.targets.compose import ComposeTarget, ProgressCallback, project_containers
from pytest_apex.targets.deadline import Deadline
from pytest_apex.targets.errors import DockerUnavailable, StackStartError
from pytest_apex.targets.external import ExternalTarget
from pytest_apex.targets.identity import ProcessStartTime, RunIdentity, process_start_time
from pytest_apex.targets.projects import (
    RUN_NAME,
    RUN_PREFIX,
    down_by_name,
    kept_project_for,
    label_override,
    new_project_name,
    removal_command,
)
from pytest_apex.targets.reaping import reap_stale
from pytest_apex.targets.runner import CommandRunner, CommandTimedOut, SubprocessRunner
from pytest_apex.targets.signals import (
    install_sigterm_handler,
    restore_sigterm_handler,
    signals_held,
)
from pytest_apex.targets.state import RunState, private_dir, state_root

if TYPE_CHECKING:
    from pytest_apex.app import AppDescription, Topology
    from pytest_apex.settings import ApexSettings

# A worker waits this long for another process of the run to finish starting the stack
# (a cold build plus the health checks fit well within it).
_LOCK_TIMEOUT_S = 1200.0
# The whole teardown (waiting for a worker's start, `down`, the stragglers) fits in this;
# then what is left is named with the command that removes it.
TEARDOWN_BUDGET_S = 60.0
_LABELS_FILE = "labels.json"  # the compose override that labels the stack with its owner
_OWNER_FILE = "owner.json"  # the same identity, for judging a dead run's state directory

WatchdogStarter = Callable[
    [CommandRunner, str, str, Path, Callable[[str], None]], watchdog.Watchdog
]


class TargetSession:
    """The run's target: created at configure time, started on first use, stopped at the end."""

    def __init__(
        self,
        settings: ApexSettings,
        project: str,
        state_dir: Path,
        *,
        is_controller: bool,
        identity: RunIdentity | None = None,
        runner: CommandRunner | None = None,
        progress: ProgressCallback | None = None,
        start_time_of: ProcessStartTime = process_start_time,
        start_watchdog: WatchdogStarter = watchdog.start,
    ) -> None:
        self.settings = settings
        self.project = project
        self.state_dir = state_dir
        self.is_controller = is_controller
        # Whose stack this is: the controller's process, wherever the start happens.
        self.identity = identity or RunIdentity.of_process(os.getpid(), project)
        self.runner: CommandRunner = runner or SubprocessRunner()
        # Progress quotes exception texts and compose's output: redacted like the reports.
        shown = progress or _stderr_progress
        self.progress: ProgressCallback = lambda line: shown(redact(line))
        self.start_time_of = start_time_of
        self.start_watchdog = start_watchdog
        self._target: Target | None = None
        self._guard: watchdog.Guard | None = None
        self._previous_sigterm: Any = None

    # -- construction ----------------------------------------------------------------------

    @classmethod
    def for_controller(cls, settings: ApexSettings, **kwargs: Any) -> TargetSession:
        project = new_project_name(keep=settings.keep)
        state_dir = state_root() / project
        session = cls(settings, project, state_dir, is_controller=True, **kwargs)
        if not settings.is_external:
            session._previous_sigterm = install_sigterm_handler()
        return session

    @classmethod
    def from_workerinput(
        cls, settings: ApexSettings, workerinput: Mapping[str, Any], **kwargs: Any
    ) -> TargetSession:
        identity = RunIdentity.from_labels(json.loads(str(workerinput["apex_identity"])))
        return cls(
            settings,
            str(workerinput["apex_project"]),
            Path(workerinput["apex_state_dir"]),
            is_controller=False,
            identity=identity,
            **kwargs,
        )

    def workerinput(self) -> dict[str, str]:
        return {
            "apex_project": self.project,
            "apex_state_dir": str(self.state_dir),
            "apex_identity": json.dumps(self.identity.labels()),
        }

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
        private_dir(self.state_dir.parent, create=True)
        self.state_dir.mkdir(mode=0o700, exist_ok=True)
        owner = self.state_dir / _OWNER_FILE
        if not owner.exists():
            owner.write_text(json.dumps(self.identity.labels()), encoding="utf-8")
        try:
            with FileLock(str(self.state_dir / "lock"), timeout=_LOCK_TIMEOUT_S):
                state = RunState.read(self._state_file)
                if state is None:
                    state = self._start()
        except Timeout:
            raise StackStartError(
                f"gave up after {_LOCK_TIMEOUT_S:.0f} s waiting for another process of this "
                f"run to start stack {self.project}"
            ) from None
        if state.status != "up":
            state.raise_error()
        self._guard_with(state)
        self._target = self._compose_target(state.project)
        return self._target

    def describe(self) -> dict[str, str]:
        info = {"target": "external" if self.settings.is_external else f"compose:{self.project}"}
        target = self._target
        if target is None and not self.settings.is_external:
            # Under xdist the controller never acquires; the state file says what a worker
            # started (or reused), so the report still names the stack and its images.
            state = RunState.read(self._state_file)
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
        removes the stack by hand. Further Ctrl-C / SIGTERM are held off until it is done,
        and all of it, waiting for a worker still starting the stack included, is bounded
        by one deadline (`TEARDOWN_BUDGET_S`).
        """
        if not self.is_controller or self.settings.is_external:
            return
        deadline = Deadline(TEARDOWN_BUDGET_S)
        project = self.project
        ours = False  # only a directory that passed the check is read and removed
        lock: FileLock | None = None
        try:
            ours = private_dir(self.state_dir.parent, create=False) and self.state_dir.is_dir()
            if not ours:
                return  # no test needed the stack
            lock = self._teardown_lock(deadline)
            state = RunState.read(self._state_file)
            if state is None:
                return  # no test needed the stack
            project = state.project
            with signals_held(self.progress, f"removing stack {state.project}"):
                if state.status == "up" and (self.settings.keep or state.reused):
                    self._tell_watchdog(state, "keep")
                    self._announce_kept(state.project)
                elif state.status == "failed" and not project_containers(
                    self.runner, state.project, deadline.timeout(60)
                ):
                    pass  # removed when it failed (see _start)
                else:
                    # Also an interrupted start ("starting"): some containers may exist.
                    self._teardown(state.project, deadline)
                    self._tell_watchdog(state, "release")
        except Exception as exc:
            self.progress(
                f"could not finish stack {project}: {type(exc).__name__}: {exc}\n"
                f"  remove it by hand: {removal_command(project)}"
            )
        finally:
            if lock is not None:
                lock.release()
            if self._guard is not None:
                self._guard.close()
            if ours:
                shutil.rmtree(self.state_dir, ignore_errors=True)
            restore_sigterm_handler(self._previous_sigterm)
            self._previous_sigterm = None

    # -- internals -------------------------------------------------------------------------

    def _teardown_lock(self, deadline: Deadline) -> FileLock | None:
        """The run's start lock, held while finish() reads the state and tears down.

        A worker may still be starting the stack (it holds the lock from before `up` until
        the state says "up" or "failed"); reading without the lock could see no state, or
        "starting", and leave the stack that is about to come up behind. The wait is
        bounded (`_LOCK_TIMEOUT_S`, and the teardown's deadline): on timeout (or Ctrl-C)
        the teardown goes ahead on what the state says.
        """
        lock = FileLock(str(self.state_dir / "lock"), timeout=_LOCK_TIMEOUT_S)
        try:
            lock.acquire(blocking=False)
            return lock
        except Timeout:
            pass
        wait = min(_LOCK_TIMEOUT_S, deadline.remaining() / 2)
        self.progress(
            f"waiting for another process of this run to finish starting stack "
            f"{self.project} before removing it (at most {wait:g} s)"
        )
        try:
            lock.acquire(timeout=wait)
            return lock
        except Timeout:
            reason = f"it did not finish within {wait:g} s"
        except KeyboardInterrupt:
            reason = "interrupted"
        self.progress(f"stopped waiting ({reason}); removing stack {self.project} anyway")
        return None

    def _compose_target(self, project: str) -> ComposeTarget:
        assert self.settings.stack is not None, "compose target without a compose file"
        app = self.settings.app
        # The app's fault variable always goes in, empty for none: a value exported in the
        # shell must not switch a fault on behind the run's back.
        env = {app.faults.env: ",".join(self.settings.faults)} if app.faults else {}
        labels = self.state_dir / _LABELS_FILE
        overrides = [labels] if project == self.project and labels.is_file() else []
        # A fault that is a container property comes with its own override file.
        files = app.faults.files if app.faults else {}
        overrides += [
            self.settings.stack.parent / files[f] for f in self.settings.faults if f in files
        ]
        # A topology (replicas behind a balancer) is the same path: its own override files,
        # and the services it routes through another compose service's published port.
        topology = self.settings.selected_topology
        served: dict[str, ServedBy] = {}
        if topology is not None:
            overrides += self._topology_files(topology)
            served = {
                service: ServedBy(compose_service, _port_of(app, service))
                for service, compose_service in topology.endpoints.items()
            }
        return ComposeTarget(
            self.settings.stack,
            project,
            env=env,
            runner=self.runner,
            progress=self.progress,
            port_schemes=app.port_schemes,
            override_files=overrides,
            served_by=served,
            topology=topology.name if topology is not None else "",
        )

    def _topology_files(self, topology: Topology) -> list[Path]:
        assert self.settings.stack is not None
        return [self.settings.stack.parent / f for f in topology.files]

    def _check_topology_files(self) -> None:
        """Name a topology's missing override file before compose says "no such file"."""
        topology = self.settings.selected_topology
        if topology is None:
            return
        missing = [str(f) for f in self._topology_files(topology) if not f.is_file()]
        if missing:
            source = self.settings.app.source or "the app description"
            raise StackStartError(
                f"topology {topology.name}: override file(s) {', '.join(missing)} do not "
                f"exist (topologies.{topology.name}.files in {source}, relative to the "
                f"compose file {self.settings.stack})"
            )

    def _start(self) -> RunState:
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
                    state = RunState("up", kept, reused=True)
                    state.write(self._state_file)
                    return state
                self.progress("no running kept stack to reuse; starting a new one")
            # Judged as the run's owner sees it: same machine, boot, pid namespace and user.
            reap_stale(
                self.runner, self.progress, self.identity, self.start_time_of, self.state_dir
            )
            self._remove_stale_state_dirs(self.identity)
            self._check_topology_files()
            target.validate()
            labels = label_override(target.services(), self.identity.labels())
            (self.state_dir / _LABELS_FILE).write_text(labels, encoding="utf-8")
            target = self._compose_target(self.project)
        except Exception as exc:
            self._fail_start(exc)
        # Written before `up` so that an interrupted start is still torn down by finish().
        starting = RunState("starting", self.project)
        self._start_watchdog(starting)
        starting.write(self._state_file)
        try:
            target.up()
            # A topology's balancer that publishes nothing fails here, once, with the stack
            # removed, rather than in every test that asks for an endpoint.
            if target.served_by:
                target.endpoints()
        except Exception as exc:
            # Removed now rather than at the end of the run: nothing can use a broken
            # stack, and the error already holds what its containers had to say.
            self.progress(f"stack {self.project} did not come up; removing it")
            try:
                self._teardown(self.project, Deadline(TEARDOWN_BUDGET_S))
                self._tell_watchdog(starting, "release")
            except Exception as teardown_error:  # the start error is the one to report
                self.progress(f"could not remove stack {self.project}: {teardown_error}")
            self._fail_start(exc)
        state = RunState(
            "up",
            self.project,
            watchdog_host=starting.watchdog_host,
            watchdog_port=starting.watchdog_port,
        )
        state.write(self._state_file)
        return state

    def _start_watchdog(self, state: RunState) -> None:
        """Start the stack's watchdog and hold a connection to it; record where it listens.

        A run without one still works (and says so): only a run killed outright then
        leaves its stack for the next run's reaper.
        """
        try:
            dog = self.start_watchdog(
                self.runner, self.project, self.identity.run, self.state_dir, self.progress
            )
            self._guard = watchdog.Guard.connect(dog.host, dog.port, self.project)
        except (watchdog.WatchdogUnavailable, DockerUnavailable, OSError) as exc:
            self.progress(
                f"no watchdog for stack {self.project} ({exc}); if this run is killed "
                "outright, its stack stays until the next run removes it"
            )
            return
        if self.settings.keep:
            self._guard.tell("patient")
        state.watchdog_host, state.watchdog_port = dog.host, dog.port

    def _guard_with(self, state: RunState) -> None:
        """Hold a connection to the stack's watchdog from this process too (best effort):
        the stack is in use while any process of the run is alive."""
        if self._guard is not None or not state.watchdog_port or state.reused:
            return
        try:
            self._guard = watchdog.Guard.connect(
                state.watchdog_host, state.watchdog_port, state.project
            )
        except watchdog.WatchdogUnavailable as exc:
            self.progress(f"could not reach the watchdog of stack {state.project}: {exc}")
            return
        if self.settings.keep:
            self._guard.tell("patient")

    def _tell_watchdog(self, state: RunState, word: str) -> None:
        """The run's final word to the watchdog: the stack is ``keep``-t or ``release``-d."""
        if not state.watchdog_port:
            return
        if self._guard is not None:
            self._guard.tell(word)
        else:
            watchdog.tell(state.watchdog_host, state.watchdog_port, state.project, word)

    def _remove_stale_state_dirs(self, me: RunIdentity) -> None:
        """State directories of dead runs next to ours, judged like their stacks.

        /tmp can be shared with runs in other pid namespaces (containers): a directory is
        only removed when the owner it records is provably dead, never by its name alone.
        """
        for path in self.state_dir.parent.glob(f"{RUN_PREFIX}-*"):
            if path == self.state_dir or not RUN_NAME.match(path.name):
                continue
            try:
                labels = json.loads((path / _OWNER_FILE).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            owner = RunIdentity.from_labels(labels) if isinstance(labels, dict) else None
            if owner is not None and me.why_dead(owner, self.start_time_of):
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
        RunState("failed", self.project, error=redact(text), error_kind=kind).write(
            self._state_file
        )
        if error is exc:
            raise exc
        raise error from exc

    def _teardown(self, project: str, deadline: Deadline) -> None:
        """`down` the project and make sure no container of it is left, within `deadline`.

        A container whose create was in flight when `up` was killed can appear after the
        first `down` looked, and `down` with a changed compose file can miss some: so it
        is repeated by name while time is left. When the deadline passes, what is left is
        named, with the command that removes it.
        """
        self.progress(f"stopping stack {project}")
        started = time.monotonic()
        target = self._compose_target(project)
        left: list[str] | None = None
        try:
            target.stop(timeout=deadline.timeout(TEARDOWN_BUDGET_S))
            while not deadline.expired():
                left = target.remaining_containers(timeout=deadline.timeout(60))
                if not left:
                    break
                down_by_name(self.runner, project, self.state_dir, deadline)
                left = None
        except subprocess.TimeoutExpired:
            left = None
        if left is None:  # the deadline cut a step short: one last short look
            with contextlib.suppress(Exception):
                left = project_containers(self.runner, project, timeout=5)
        if left == []:
            self.progress(f"stack {project} removed in {time.monotonic() - started:.1f} s")
            return
        what = (
            f"{len(left)} container(s) ({' '.join(c[:12] for c in left)})"
            if left
            else ("containers Docker could not list in time")
        )
        self.progress(
            f"stack {project} not removed within {deadline.seconds:g} s; left: {what}\n"
            f"  remove it with: {removal_command(project)}"
        )

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


def _port_of(app: AppDescription, service: str) -> int | None:
    described = app.services.get(service)
    return described.port if described is not None else None


def _stderr_progress(line: str) -> None:
    print(f"[apex] {line}", file=sys.stderr, flush=True)
