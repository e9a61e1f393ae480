"""Shared helpers for the project's own tests (not part of the plugin's public surface)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from pytest_apex.adapters.apex import ApexAdapter
from pytest_apex.adapters.base import AgentRun
from pytest_apex.dsn import postgres_dsn
from pytest_apex.reference import CONTAINER_FAULTS, EMAIL_DOMAIN, FAULTS_ENV, PORT_SCHEMES
from pytest_apex.targets.compose import ComposeTarget
from pytest_apex.targets.lifecycle import new_project_name

ROOT = Path(__file__).resolve().parent.parent
STACK_DIR = ROOT / "fixtures" / "stack"
COMPOSE_FILE = STACK_DIR / "docker-compose.staging.yml"
ENV_FILE = STACK_DIR / ".env.staging"
FAULT_OVERRIDES = STACK_DIR / "faults"  # faults/<switch>.yml for container-level switches
_RECREATE_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class Topology:
    """A deployment shape of the reference stack: compose override files on top of the base
    file, the services they add, and which compose service serves a described one."""

    files: tuple[Path, ...]
    services: tuple[str, ...] = ()
    endpoints: Mapping[str, str] = field(default_factory=dict)


TOPOLOGIES: dict[str, Topology] = {
    # The backend scaled to two replicas behind a round-robin TCP gateway.
    "two_backends": Topology(
        files=(STACK_DIR / "topologies" / "two_backends.yml",),
        services=("gateway",),
        endpoints={"backend": "gateway"},
    ),
}


def read_env_file(path: Path = ENV_FILE) -> dict[str, str]:
    """KEY=VALUE lines of an env file, comments and blanks skipped."""
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


class FaultStack:
    """A second reference stack whose fault switches tests flip, away from the clean one.

    Switching recreates only the app services (backend, auth) with a new APEX_FAULTS,
    which takes seconds, so every fault gets a proof without a full bring-up each. A
    container-level switch (root_user) also adds its override file, faults/<switch>.yml,
    to that recreation; switching away recreates from the base file alone, undoing it.

    A topology (`TOPOLOGIES`, e.g. two_backends) is switched the same way: its override
    files join the recreation, which then also covers the services it adds (the gateway)
    and scales the backend as the file says; switching away recreates from the base file,
    which scales back and removes the added services as orphans. Under a topology the
    endpoint of a described service is the compose service serving it (backend: gateway).
    """

    APP_SERVICES = ("backend", "auth")

    def __init__(self, target: ComposeTarget) -> None:
        self.target = target
        self.faults = ""
        self.topology = ""
        self.extra: dict[str, str] = {}
        self._overrides: list[Path] = []

    def switch(
        self, *faults: str, topology: str = "", env: Mapping[str, str] | None = None
    ) -> dict[str, str]:
        """The stack with these faults (and topology, and extra compose variables: those
        of a previous switch are reset to empty unless given again)."""
        wanted = ",".join(sorted(faults))
        extra = dict(env or {})
        if (wanted, topology, extra) != (self.faults, self.topology, self.extra):
            env = {**dict.fromkeys(self.extra, ""), **extra, FAULTS_ENV: wanted}
            shape = TOPOLOGIES[topology] if topology else Topology(files=())
            overrides = [
                FAULT_OVERRIDES / f"{f}.yml" for f in sorted(faults) if f in CONTAINER_FAULTS
            ]
            overrides += shape.files
            if overrides or self._overrides:
                self._recreate_with(overrides, env, (*self.APP_SERVICES, *shape.services))
            else:
                self.target.recreate(self.APP_SERVICES, env)
            self.faults, self.topology, self._overrides = wanted, topology, overrides
            self.extra = extra
        return self.endpoints()

    def endpoints(self) -> dict[str, str]:
        """Each service's URL; under a topology a described service's URL is that of the
        compose service serving it, which is then not listed under its own name."""
        urls = self.target.endpoints()
        if self.topology:
            for described, serving in TOPOLOGIES[self.topology].endpoints.items():
                urls[described] = urls.pop(serving)
        return urls

    def _recreate_with(
        self, overrides: list[Path], env: dict[str, str], services: tuple[str, ...]
    ) -> None:
        """`ComposeTarget.recreate` runs `up` with the files its target was made with, so a
        recreation that adds or drops override files runs compose here; the target is then
        attached afresh with the new files, because the old object's cached endpoints
        predate the recreated containers' new ports. `--remove-orphans` takes away the
        services of override files left out this time (a topology's gateway)."""
        old = self.target
        files = [a for f in (old.compose_file, *overrides) for a in ("-f", str(f))]
        command = ["docker", "compose", "--project-name", old.project, *files, "up", "--detach"]
        command += ["--wait", "--no-deps", "--force-recreate", "--remove-orphans", *services]
        new_env = {**old.env, **env}
        result = old.runner(
            command, cwd=str(old.compose_file.parent), env=new_env, timeout=_RECREATE_TIMEOUT_S
        )
        assert result.returncode == 0, result.stderr.decode(errors="replace")
        self.target = ComposeTarget(
            old.compose_file,
            old.project,
            env=new_env,
            runner=old.runner,
            progress=old.progress,
            port_schemes=old.port_schemes,
            override_files=overrides,
        )

    def sql(self, statement: str) -> str:
        """Run SQL in the stack's PostgreSQL (inside its container); psql's unaligned output."""
        env = self.target.environment("postgres")
        return self.target.exec(
            "postgres",
            "psql",
            "-v",
            "ON_ERROR_STOP=1",
            "-At",
            "-U",
            env["POSTGRES_USER"],
            "-d",
            env["POSTGRES_DB"],
            "-c",
            statement,
        ).strip()

    def reset_data(self) -> None:
        """Forget agent runs, so a fault's traces never leak into a later clean check."""
        self.sql("TRUNCATE agent_executions")

    def suite_urls(
        self, *faults: str, topology: str = "", env: Mapping[str, str] | None = None
    ) -> dict[str, str]:
        """Switch to `faults` (and `topology`, `env`); the `--apex-url` values that point a
        suite at this stack, PostgreSQL with the credentials its container was given."""
        urls = self.switch(*faults, topology=topology, env=env)
        env = self.target.environment("postgres")
        host = urlsplit(urls["postgres"]).netloc
        urls["postgres"] = postgres_dsn(
            host, env["POSTGRES_USER"], env["POSTGRES_PASSWORD"], env["POSTGRES_DB"]
        )
        return urls


@pytest.fixture(scope="session")
def fault_stack() -> Iterator[FaultStack]:
    target = ComposeTarget(
        COMPOSE_FILE,
        new_project_name(),
        env={FAULTS_ENV: ""},
        progress=_progress,
        port_schemes=PORT_SCHEMES,
    )
    try:
        target.start()
        yield FaultStack(target)
    finally:
        target.stop()


def _progress(line: str) -> None:
    print(f"[fault-stack] {line}", flush=True)


async def concurrent_agent_runs(
    endpoints: dict[str, str], users: int, timeout: float = 30
) -> list[AgentRun]:
    """`users` fresh users, each with a thread and an open socket, run the agent at once."""
    adapter = ApexAdapter(endpoints)
    try:
        tag = uuid.uuid4().hex[:6]
        sessions = await asyncio.gather(
            *(adapter.login(f"f{i}-{tag}@{EMAIL_DOMAIN}") for i in range(users))
        )
        threads = await asyncio.gather(*(s.create_thread("t") for s in sessions))
        await asyncio.gather(*(s.connect() for s in sessions))
        runs = await asyncio.gather(
            *(
                s.run_agent(t["id"], f"secret request of {s.email}", timeout)
                for s, t in zip(sessions, threads, strict=True)
            )
        )
        await asyncio.gather(*(s.close() for s in sessions))
        return list(runs)
    finally:
        await adapter.aclose()
