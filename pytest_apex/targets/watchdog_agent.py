"""The watchdog's own program: it runs inside a small container next to one stack.

Compose stacks get no Ryuk (testcontainers-python #1049), so a run killed outright (SIGKILL,
an OOM kill, a CI runner that vanishes) would leave its stack running. This program holds
TCP connections from the run's processes, Ryuk-style: when the last one drops and none comes
back within a grace period, it removes the stack's containers, networks and volumes through
the Docker socket, then exits (its container was started with --rm). It touches only the
containers labelled with its project *and* its run's token, and the networks and volumes
compose labelled with that project.

Messages from the run, one per line: ``release`` (the run removed its stack: clean up what
is left and exit now), ``keep`` (the stack is handed to the user: exit, remove nothing),
``patient`` (a --apex-keep run: wait longer for its final word before removing).

Standard library only, and no import of pytest_apex: it is copied alone into the image.
"""

from __future__ import annotations

import http.client
import json
import os
import selectors
import socket
import sys
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

PORT = 7777
PROJECT_LABEL = "com.docker.compose.project"
RUN_LABEL = "io.pytest-apex.run"
DOCKER_SOCKET = "/var/run/docker.sock"


class Engine:
    """The few Docker Engine API calls the watchdog needs, over the unix socket."""

    def __init__(self, path: str = DOCKER_SOCKET) -> None:
        self.path = path

    def _call(self, method: str, url: str) -> Any:
        conn = _UnixHTTPConnection(self.path)
        try:
            conn.request(method, url)
            reply = conn.getresponse()
            body = reply.read()
        finally:
            conn.close()
        if reply.status >= 400 and reply.status != 404:
            raise RuntimeError(f"{method} {url}: {reply.status} {body[:200]!r}")
        return json.loads(body) if body and reply.status < 300 else None

    def list(self, kind: str, labels: list[str]) -> list[str]:
        """IDs (names, for volumes) of containers/networks/volumes with all the labels."""
        filters = urllib.parse.quote(json.dumps({"label": labels}))
        if kind == "containers":
            return [c["Id"] for c in self._call("GET", f"/containers/json?all=1&filters={filters}")]
        found: Any = self._call("GET", f"/{kind}?filters={filters}") or []
        if kind == "volumes":  # {"Volumes": [...], "Warnings": [...]}
            return [v["Name"] for v in found.get("Volumes") or []]
        return [item["Id"] for item in found]

    def remove(self, kind: str, ident: str) -> None:
        suffix = "?force=1&v=1" if kind == "containers" else ""
        self._call("DELETE", f"/{kind}/{ident}{suffix}")


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=30)
        self.socket_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(30)
        self.sock.connect(self.socket_path)


def remove_stack(engine: Engine, project: str, run: str, say: Callable[[str], None]) -> None:
    """`compose down --volumes` of one project, by its labels, until nothing is left.

    Containers go first (forced), again until two looks a second apart find none: a
    `compose up` orphaned by the dead run may still be creating some. Then the project's
    networks and volumes.
    """
    mine = [f"{PROJECT_LABEL}={project}", f"{RUN_LABEL}={run}"]
    quiet_looks, deadline = 0, time.monotonic() + 120
    while quiet_looks < 2 and time.monotonic() < deadline:
        containers = engine.list("containers", mine)
        quiet_looks = 0 if containers else quiet_looks + 1
        for container in containers:
            say(f"removing container {container[:12]}")
            engine.remove("containers", container)
        time.sleep(1)
    for kind in ("networks", "volumes"):
        for ident in engine.list(kind, [f"{PROJECT_LABEL}={project}"]):
            say(f"removing {kind[:-1]} {ident[:24]}")
            engine.remove(kind, ident)


def watch(
    listener: socket.socket,
    project: str,
    *,
    grace_s: float,
    patient_grace_s: float,
    first_connect_s: float,
    clock: Callable[[], float] = time.monotonic,
) -> str:
    """Serve the run's connections until the stack's fate is decided: "remove" or "keep"."""
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    clients: dict[socket.socket, bytes] = {}
    patient = False
    alone_since = clock()
    waited = first_connect_s
    while True:
        if not clients and clock() - alone_since > (patient_grace_s if patient else waited):
            return "remove"
        for key, _ in selector.select(timeout=0.5):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            if sock is listener:
                client, _ = listener.accept()
                client.sendall(f"guarding {project}\n".encode())
                clients[client] = b""
                selector.register(client, selectors.EVENT_READ)
                waited = grace_s
                continue
            try:
                data = sock.recv(4096)
            except OSError:
                data = b""
            if not data:
                selector.unregister(sock)
                sock.close()
                del clients[sock]
                alone_since = clock()
                continue
            clients[sock] += data
            *lines, clients[sock] = clients[sock].split(b"\n")
            for line in lines:
                word = line.strip().decode(errors="replace")
                if word == "release":
                    return "remove"
                if word == "keep":
                    return "keep"
                if word == "patient":
                    patient = True


def main(argv: list[str]) -> int:
    project, run = argv[1], argv[2]

    def say(line: str) -> None:
        print(f"[apex-watchdog {project}] {line}", flush=True)

    listener = socket.create_server(("0.0.0.0", PORT))
    verdict = watch(
        listener,
        project,
        grace_s=float(os.environ.get("APEX_WATCHDOG_GRACE_S", "10")),
        patient_grace_s=float(os.environ.get("APEX_WATCHDOG_PATIENT_GRACE_S", "60")),
        first_connect_s=float(os.environ.get("APEX_WATCHDOG_FIRST_CONNECT_S", "120")),
    )
    listener.close()
    say(f"verdict: {verdict}")
    if verdict == "remove":
        remove_stack(Engine(), project, run, say)
        say("stack removed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
