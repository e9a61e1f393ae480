"""The one seam through which pytest-apex runs external commands (docker, docker compose).

Tests swap `SubprocessRunner` for a fake that records commands and answers from a script,
so the target logic is exercised without a Docker engine.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from typing import Protocol


class CommandRunner(Protocol):
    """Runs a command and returns its completed process (never raises on exit status).

    It may raise `DockerUnavailable` when the program is not installed, and
    `subprocess.TimeoutExpired` when `timeout` passes (after killing the command).
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
