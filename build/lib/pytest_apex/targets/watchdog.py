"""The host side of a stack's watchdog: its image, its container, the run's connections to it.

The watchdog (`watchdog_agent`) removes a stack within seconds of the last process of its
run disappearing, even when nothing runs afterwards (see that module for why and how). Its
image is built on first use from the local `debian:bookworm-slim` (nothing can be pulled on
a machine without a registry; `make setup` builds it ahead), tagged by a digest of what
goes into it, so a changed agent gets a new image and an unchanged one is never rebuilt.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from pytest_apex.targets import watchdog_agent
from pytest_apex.targets.compose import _text
from pytest_apex.targets.runner import CommandRunner

BASE_IMAGE = "debian:bookworm-slim"
IMAGE_REPOSITORY = "pytest-apex/watchdog"
WATCHDOG_LABEL = "io.pytest-apex.watchdog"
_AGENT = Path(watchdog_agent.__file__)
_DOCKERFILE = f"""\
FROM {BASE_IMAGE}
RUN apt-get update -qq \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3 \\
 && apt-get clean && rm -rf /var/lib/apt/lists/*
COPY watchdog_agent.py /watchdog_agent.py
USER root
ENTRYPOINT ["python3", "-u", "/watchdog_agent.py"]
"""
_BUILD_TIMEOUT_S = 600.0
_HANDSHAKE_TIMEOUT_S = 15.0


class WatchdogUnavailable(RuntimeError):
    """The watchdog could not be started; the run goes on, unguarded against SIGKILL."""


def image_tag() -> str:
    """The watchdog image's tag: a digest of its Dockerfile and its agent."""
    digest = hashlib.sha256(_DOCKERFILE.encode() + _AGENT.read_bytes()).hexdigest()[:12]
    return f"{IMAGE_REPOSITORY}:{digest}"


def ensure_image(
    runner: CommandRunner, lock_dir: Path, progress: Callable[[str], None] = lambda _: None
) -> str:
    """The watchdog image, built now unless it exists (under a lock: runs start together)."""
    tag = image_tag()
    if runner(["docker", "image", "inspect", tag], timeout=30).returncode == 0:
        return tag
    with FileLock(str(lock_dir / "watchdog-build.lock"), timeout=_BUILD_TIMEOUT_S):
        if runner(["docker", "image", "inspect", tag], timeout=30).returncode == 0:
            return tag
        progress(f"building the watchdog image {tag} from {BASE_IMAGE} (once, about 20 s)")
        with tempfile.TemporaryDirectory(prefix="apex-watchdog-") as context:
            (Path(context) / "Dockerfile").write_text(_DOCKERFILE, encoding="utf-8")
            (Path(context) / "watchdog_agent.py").write_bytes(_AGENT.read_bytes())
            built = runner(
                ["docker", "build", "--quiet", "--tag", tag, context], timeout=_BUILD_TIMEOUT_S
            )
        if built.returncode != 0:
            said = (_text(built.stderr) or _text(built.stdout)).strip()[-600:]
            raise WatchdogUnavailable(
                f"could not build the watchdog image {tag} from {BASE_IMAGE}: {said}"
            )
    return tag


def docker_socket() -> str:
    """The engine's unix socket on the host, to hand to the watchdog container."""
    host = os.environ.get("DOCKER_HOST", "")
    if not host:
        return "/var/run/docker.sock"
    if host.startswith("unix://"):
        return host.removeprefix("unix://")
    raise WatchdogUnavailable(f"DOCKER_HOST={host} is not a local unix socket")


@dataclass(frozen=True)
class Watchdog:
    """A started watchdog container and the loopback address it listens on."""

    container: str
    host: str
    port: int


def start(
    runner: CommandRunner,
    project: str,
    run_token: str,
    lock_dir: Path,
    progress: Callable[[str], None] = lambda _: None,
) -> Watchdog:
    """Start the watchdog of `project` (its containers labelled with `run_token`)."""
    tag = ensure_image(runner, lock_dir, progress)
    sock = docker_socket()
    started = runner(
        [
            "docker",
            "run",
            "--detach",
            "--rm",
            "--label",
            f"{WATCHDOG_LABEL}={project}",
            "--publish",
            f"127.0.0.1::{watchdog_agent.PORT}",
            "--volume",
            f"{sock}:{watchdog_agent.DOCKER_SOCKET}",
            "--memory",
            "64m",
            tag,
            project,
            run_token,
        ],
        timeout=60,
    )
    if started.returncode != 0:
        said = (_text(started.stderr) or _text(started.stdout)).strip()
        raise WatchdogUnavailable(f"could not start the watchdog of {project}: {said}")
    container = _text(started.stdout).strip()
    port = runner(["docker", "port", container, f"{watchdog_agent.PORT}/tcp"], timeout=30)
    address = _text(port.stdout).strip().splitlines()
    if port.returncode != 0 or not address:
        runner(["docker", "rm", "--force", container], timeout=30)
        raise WatchdogUnavailable(f"the watchdog of {project} published no port")
    host, _, number = address[0].rpartition(":")
    return Watchdog(container, host or "127.0.0.1", int(number))


class Guard:
    """One process's connection to the watchdog: while it is open, the stack is in use.

    The socket is not inherited by child processes (PEP 446), so a `docker compose`
    orphaned by a killed run does not keep the stack alive.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    @classmethod
    def connect(
        cls, host: str, port: int, project: str, within: float = _HANDSHAKE_TIMEOUT_S
    ) -> Guard:
        """Connect and wait (at most `within` seconds) for the watchdog to say it guards
        `project`.

        Retried until the handshake arrives: the published port accepts connections before
        the agent listens, and drops them.
        """
        deadline = time.monotonic() + within
        said = "no answer"
        while time.monotonic() < deadline:
            try:
                sock = socket.create_connection((host, port), timeout=2)
                greeting = sock.makefile("rb").readline().decode(errors="replace").strip()
            except OSError as exc:
                said = str(exc)
                time.sleep(0.1)
                continue
            if greeting == f"guarding {project}":
                sock.settimeout(None)
                return cls(sock)
            sock.close()
            said = greeting or "connection closed"
            time.sleep(0.1)
        raise WatchdogUnavailable(f"the watchdog of {project} at {host}:{port} said: {said}")

    def tell(self, word: str) -> None:
        """Send one message (``patient``, ``keep`` or ``release``); best effort."""
        with contextlib.suppress(OSError):
            self._sock.sendall(f"{word}\n".encode())

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.close()


def tell(host: str, port: int, project: str, word: str) -> bool:
    """Connect, send a final word, disconnect; whether the watchdog was there to hear it."""
    try:
        guard = Guard.connect(host, port, project, within=2.0)
    except WatchdogUnavailable:
        return False
    guard.tell(word)
    guard.close()
    return True
