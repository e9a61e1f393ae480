"""The one seam through which pytest-apex runs external commands (docker, docker compose).

Tests swap `SubprocessRunner` for a fake that records commands and answers from a script,
so the target logic is exercised without a Docker engine.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from typing import Protocol


class CommandRunner(Protocol):
    """Runs a command and returns its completed process (never raises on exit status).

    It may raise `DockerUnavailable` when the program is not installed, and
    `subprocess.TimeoutExpired` when `timeout` passes (after killing the command); the
    real runner raises `CommandTimedOut`, which is both.
    """

    def __call__(
        self,
        args: Sequence[str],
        *,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> subprocess.CompletedProcess[bytes]: ...


class SubprocessRunner:
    """The real runner: `subprocess.run` with the caller's extra environment merged in."""

    def __call__(
        self,
        args: Sequence[str],
        *,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        full_env = {**os.environ, **env} if env else None
        try:
            return subprocess.run(
                list(args),
                cwd=cwd,
                env=full_env,
                capture_output=True,
                timeout=timeout,
                check=False,
                # Own process group: a Ctrl-C at the terminal reaches pytest only. pytest then
                # unwinds and `subprocess.run` kills an in-flight `up` itself, while the
                # `down` of the teardown that follows is not cut short by the same keypress
                # (or a second one).
                start_new_session=True,
            )
        except subprocess.TimeoutExpired as exc:
            raise CommandTimedOut.from_expired(exc) from None
        except FileNotFoundError as exc:
            if cwd is not None and exc.filename == cwd:
                raise  # the working directory is missing, not the program
            raise DockerUnavailable(
                f"'{args[0]}' is not installed or not on PATH. pytest-apex needs the Docker CLI "
                "with the Compose v2 plugin for compose targets (on Debian: `make setup`), "
                "or --apex-url SERVICE=URL to test an already-deployed stack without Docker."
            ) from exc


class DockerUnavailable(RuntimeError):
    """Docker (or its compose plugin) is missing or its engine is not running."""


class CommandTimedOut(DockerUnavailable, subprocess.TimeoutExpired):
    """A docker command did not finish in time: most often a hung engine.

    Both a `DockerUnavailable`, so that every caller which reports an unusable engine
    (the start, the fixtures) says so in words instead of a traceback, and a
    `subprocess.TimeoutExpired`, so that `compose up`'s own timeout still takes the
    diagnosis path built for it (which names the services that never got healthy).
    """

    def __init__(
        self,
        cmd: Sequence[str],
        timeout: float,
        output: bytes | None = None,
        stderr: bytes | None = None,
    ) -> None:
        subprocess.TimeoutExpired.__init__(self, list(cmd), timeout, output, stderr)
        RuntimeError.__init__(self, str(self))

    @classmethod
    def from_expired(cls, exc: subprocess.TimeoutExpired) -> CommandTimedOut:
        cmd = exc.cmd if isinstance(exc.cmd, list | tuple) else shlex.split(str(exc.cmd))
        output = exc.output if isinstance(exc.output, bytes) else None
        stderr = exc.stderr if isinstance(exc.stderr, bytes) else None
        return cls([str(part) for part in cmd], exc.timeout, output, stderr)

    def __str__(self) -> str:
        shown = shlex.join(self.cmd)
        if len(shown) > 160:  # a long compose command line buries the point of the message
            shown = shown[:157] + "..."
        return (
            f"`{shown}` did not answer within {self.timeout:g} s; is the Docker engine hung? "
            "Check `docker info`, restart the engine (`sudo systemctl restart docker`, or "
            "`make setup` on Debian), or use --apex-url SERVICE=URL to test an "
            "already-deployed stack without Docker."
        )
