"""Shared helpers for the project's own tests (not part of the plugin's public surface)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from pytest_apex.adapters.apex import ApexAdapter
from pytest_apex.adapters.base import AgentRun
from pytest_apex.dsn import postgres_dsn
from pytest_apex.reference import EMAIL_DOMAIN, FAULTS_ENV, PORT_SCHEMES
from pytest_apex.targets.compose import ComposeTarget
from pytest_apex.targets.lifecycle import new_project_name

ROOT = Path(__file__).resolve().parent.parent
STACK_DIR = ROOT / "fixtures" / "stack"
COMPOSE_FILE = STACK_DIR / "docker-compose.staging.yml"
ENV_FILE = STACK_DIR / ".env.staging"


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
    which takes seconds, so every fault gets a proof without a full bring-up each.
    """

    APP_SERVICES = ("backend", "auth")

    def __init__(self, target: ComposeTarget) -> None:
        self.target = target
        self.faults = ""

    def switch(self, *faults: str) -> dict[str, str]:
        wanted = ",".join(sorted(faults))
        if wanted != self.faults:
            self.target.recreate(self.APP_SERVICES, {FAULTS_ENV: wanted})
            self.faults = wanted
        return self.target.endpoints()

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

    def suite_urls(self, *faults: str) -> dict[str, str]:
        """Switch to `faults`; the `--apex-url` values that point a suite at this stack,
        PostgreSQL with the credentials its container was given."""
        urls = self.switch(*faults)
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
