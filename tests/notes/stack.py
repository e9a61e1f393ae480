"""The Notes example stack (fixtures/notes/compose.yml) under testcontainers' DockerCompose.

Each session gets its own compose project (`notes-<pid>-<hex>`, named in an env file handed to
compose, so nothing is exported to this process's environment) on ephemeral 127.0.0.1 ports.
The same env file carries NOTES_BUGS: switching a planted bug rewrites it and recreates the api
service alone, which compose does because the api's environment changed.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import subprocess
from pathlib import Path

from testcontainers.compose import ComposeContainer, DockerCompose

ROOT = Path(__file__).resolve().parents[2]
NOTES_DIR = ROOT / "fixtures" / "notes"
COMPOSE_FILE = NOTES_DIR / "compose.yml"
CONTAINER_PORTS = {"api": 8080, "identity": 7000, "db": 5432}
# Variables the env file sets; one exported in the shell would win over it (compose's
# precedence), so the run would not be testing what it says.
CONTROLLED = ("COMPOSE_PROJECT_NAME", "NOTES_BUGS")
LOG_LINES_ON_FAILURE = 40


class StackFailed(RuntimeError):
    """`docker compose up --wait` failed; the message holds compose's error and recent logs."""


def new_project_name() -> str:
    return f"notes-{os.getpid()}-{secrets.token_hex(3)}"


class NotesStack:
    def __init__(self, env_file: Path, project: str | None = None) -> None:
        exported = [name for name in CONTROLLED if name in os.environ]
        if exported:
            raise RuntimeError(
                f"unset {', '.join(exported)}: the Notes tests set them per run, "
                "and a value exported in the shell would override theirs"
            )
        self.project = project or new_project_name()
        self.env_file = env_file
        self.bugs: tuple[str, ...] = ()
        self._write_env_file()
        self.compose = DockerCompose(
            NOTES_DIR,
            compose_file_name=COMPOSE_FILE.name,
            build=True,
            wait=True,
            env_file=str(env_file),
        )

    def _write_env_file(self) -> None:
        self.env_file.write_text(
            f"COMPOSE_PROJECT_NAME={self.project}\nNOTES_BUGS={','.join(self.bugs)}\n"
        )

    def _up(self, compose: DockerCompose) -> None:
        try:
            compose.start()
        except subprocess.CalledProcessError as error:
            stderr = (error.stderr or b"").decode(errors="replace").strip()
            raise StackFailed(f"{self.project}: {stderr}\n{self.recent_logs()}") from None

    def start(self) -> None:
        self._up(self.compose)

    def stop(self) -> None:
        """`down --volumes`: containers, network and the database's data go."""
        self.compose.stop(down=True)

    def recent_logs(self) -> str:
        stdout, _ = self.compose.get_logs()
        return "\n".join(stdout.splitlines()[-LOG_LINES_ON_FAILURE:])

    def url(self, service: str) -> str:
        """Where `service` answers on this host now (its port changes when it is recreated)."""
        port = CONTAINER_PORTS[service]
        host = self.compose.get_service_host(service, port)
        return f"http://{host}:{self.compose.get_service_port(service, port)}"

    def container(self, service: str) -> ComposeContainer:
        """The service's container, also when it has exited (the one-shot `migrate`)."""
        return self.compose.get_container(service, include_all=True)

    def set_bugs(self, *bugs: str) -> None:
        """Recreate the api with NOTES_BUGS=bugs; returns once it is healthy again."""
        if tuple(sorted(bugs)) == self.bugs:
            return
        self.bugs = tuple(sorted(bugs))
        self._write_env_file()
        self._up(self._only("api"))

    def stop_service(self, service: str) -> None:
        self._only(service).stop(down=False)

    def _only(self, service: str) -> DockerCompose:
        """The same project, restricted to `service` (and, for `up`, what it depends on).

        It keeps `build=True`: compose records how a container was created, and an `up` without
        --build after one with it recreates the dependencies too (a new identity, a new signing
        key); the build itself is cached."""
        return dataclasses.replace(self.compose, services=[service])

    def start_service(self, service: str) -> None:
        self._up(self._only(service))
