"""Layered fixtures: settings -> target -> endpoints -> adapter -> users.

Each layer is small and overridable in a project's conftest.py (the pytest-django way):
override `apex_adapter` to drive your own app, `apex_target` to bring your own
environment, `apex_endpoints` to rewrite URLs.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from pytest_apex._stash import target_session_key
from pytest_apex.adapters.apex import ApexAdapter
from pytest_apex.adapters.base import AppAdapter, UserSession
from pytest_apex.targets.base import ContainerInfo, Target
from pytest_apex.targets.errors import DockerUnavailable, StackStartError


@pytest.fixture(scope="session")
def apex_target(pytestconfig: pytest.Config) -> Target:
    """The running stack of this run; started on first use, stopped at the end of the run."""
    session = pytestconfig.stash[target_session_key]
    try:
        return session.acquire()
    except (StackStartError, DockerUnavailable) as exc:
        pytest.fail(f"stack failure: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def apex_endpoints(apex_target: Target) -> dict[str, str]:
    """Base URL of each service of the target."""
    return apex_target.endpoints()


@pytest.fixture
def apex_containers(apex_target: Target) -> list[ContainerInfo]:
    """The target's containers; tests that need them skip on external targets."""
    containers = apex_target.containers()
    if not containers:
        pytest.skip(f"target {apex_target.name} gives no container access (external target)")
    return containers


@pytest.fixture
async def apex_adapter(apex_endpoints: dict[str, str]) -> AsyncIterator[AppAdapter]:
    """How users log in and run the agent; override this to test your own app."""
    adapter = ApexAdapter(apex_endpoints)
    yield adapter
    await adapter.aclose()


UserFactory = Callable[[int], Awaitable[list[UserSession]]]


@pytest.fixture
async def apex_users(apex_adapter: AppAdapter) -> AsyncIterator[UserFactory]:
    """`await apex_users(n)` logs in n fresh users concurrently; all are closed afterwards."""
    sessions: list[UserSession] = []

    async def make(count: int) -> list[UserSession]:
        run = uuid.uuid4().hex[:8]
        made = await asyncio.gather(
            *(apex_adapter.login(f"user{i}-{run}@apex.test") for i in range(count))
        )
        sessions.extend(made)
        return list(made)

    yield make
    await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)


@pytest.fixture(scope="session")
def apex_postgres_dsn(apex_target: Target, apex_endpoints: dict[str, str]) -> str:
    """A DSN for the stack's PostgreSQL: the `postgres` endpoint if it carries credentials
    (e.g. `--apex-url postgres=postgresql://user:pw@host/db`), else the endpoint plus the
    credentials the compose service was configured with."""
    url = apex_endpoints.get("postgres")
    if not url:
        pytest.skip("no postgres endpoint (give --apex-url postgres=postgresql://...)")
    if "@" in url:
        return url
    env = apex_target.environment("postgres")
    if not {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"} <= env.keys():
        pytest.skip("postgres credentials unknown (give a DSN with --apex-url postgres=...)")
    host = url.split("://", 1)[1]
    return (
        f"postgresql://{env['POSTGRES_USER']}:{env['POSTGRES_PASSWORD']}@{host}/"
        f"{env['POSTGRES_DB']}"
    )


@pytest.fixture(scope="session")
def apex_redis_url(apex_endpoints: dict[str, str]) -> str:
    """The stack's Redis URL (the `redis` endpoint)."""
    url = apex_endpoints.get("redis")
    if not url:
        pytest.skip("no redis endpoint (give --apex-url redis=redis://...)")
    return url
