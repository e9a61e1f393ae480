"""What the load and soak suites watch beside the load: read from the app description.

`apex_health_checks`: one check per service with a health route (its readiness where it
has one: a service that cannot reach its database cannot serve either). `apex_memory_sources`:
the memory of the app's own processes (its api and auth services), from the
containers on a target that has them, else from each service's resident-memory gauge.
`apex_server_view`: the app's monitoring (``[app.monitoring]``), where the server's own view
of each stage is read, or why it is not. `apex_load_executor`: where the load's workers run
(`--apex-executor`: this machine, or a Ray cluster).
Each is a fixture a project overrides in its conftest.py to watch something else.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

import httpx
import pytest

from pytest_apex.app.model import AppDescription, HealthRoute
from pytest_apex.executors import LoadExecutor, LocalExecutor, RayExecutor
from pytest_apex.health.probes import probe
from pytest_apex.load.availability import HealthCheck
from pytest_apex.load.memory import ContainerMemory, MemorySource, MetricMemory
from pytest_apex.settings import ApexSettings
from pytest_apex.suites.load_server import ServerView, server_view
from pytest_apex.targets.base import Target

if TYPE_CHECKING:
    import docker

PROBE_TIMEOUT_S: Final = 2.0
# The processes that hold users' state: a database or a cache grows as it caches, which is
# not a leak, and a static front end's few MiB swing by more than 5 % with its connections.
WATCHED_ROLES: Final = ("api", "auth")


@dataclass(frozen=True)
class RouteCheck:
    """A GET of one health route: healthy in the route's format, within the timeout."""

    client: httpx.Client
    url: str
    route: HealthRoute

    def __call__(self) -> str:
        answer = probe(self.client, self.url)
        return "" if answer.healthy(self.route) else answer.describe_failure()


@dataclass(frozen=True)
class MemoryWatch:
    """The services whose memory is read, and those no source could be found for."""

    sources: Mapping[str, MemorySource]
    missing: tuple[str, ...] = field(default=())


@pytest.fixture
def watch_http() -> Iterator[httpx.Client]:
    # Its own client: the probes must not queue behind the load's connections, and a
    # connection idle past a second is not reused (a server may just have dropped it).
    limits = httpx.Limits(keepalive_expiry=1.0)
    with httpx.Client(timeout=httpx.Timeout(PROBE_TIMEOUT_S), limits=limits) as client:
        yield client


@pytest.fixture
def apex_health_checks(
    apex_app: AppDescription, apex_endpoints: dict[str, str], watch_http: httpx.Client
) -> dict[str, HealthCheck]:
    """service -> its health check, for every described service with a route and an URL."""
    checks: dict[str, HealthCheck] = {}
    for name, service in apex_app.services.items():
        route = service.readiness or service.liveness
        base = apex_endpoints.get(name)
        if route is None or not base:
            continue
        checks[name] = RouteCheck(watch_http, base.rstrip("/") + route.path, route)
    return checks


@pytest.fixture
def apex_memory_sources(
    apex_app: AppDescription,
    apex_target: Target,
    apex_endpoints: dict[str, str],
    watch_http: httpx.Client,
) -> Iterator[MemoryWatch]:
    """The memory of each watched service: per container (``backend#2`` for a second
    replica) where the target has containers, else its metrics gauge."""
    watched = [n for n, s in apex_app.services.items() if s.role in WATCHED_ROLES]
    replicas: dict[str, list[tuple[int, str]]] = {}
    for info in apex_target.containers():
        if info.state == "running":
            replicas.setdefault(info.service, []).append((info.number, info.container_id))
    sources: dict[str, MemorySource] = {}
    missing: list[str] = []
    api = _docker_api() if replicas else None
    for name in watched:
        ids = [container_id for _, container_id in sorted(replicas.get(name, []))]
        if api is not None and ids:
            for number, container_id in enumerate(ids, start=1):
                label = name if len(ids) == 1 else f"{name}#{number}"
                sources[label] = ContainerMemory(api, container_id)
            continue
        metrics = apex_app.services[name].metrics
        base = apex_endpoints.get(name)
        if metrics is not None and base:
            sources[name] = MetricMemory(
                watch_http, base.rstrip("/") + metrics.path, metrics.memory
            )
        else:
            missing.append(name)
    try:
        yield MemoryWatch(sources, tuple(missing))
    finally:
        if api is not None:
            api.close()


@pytest.fixture
def apex_server_view(
    apex_app: AppDescription, apex_endpoints: dict[str, str]
) -> Iterator[ServerView]:
    """The query API of the app's monitoring on this target; `skipped` says why there is
    none (the description names no monitoring, or the target has no such endpoint)."""
    view = server_view(apex_app, apex_endpoints)
    try:
        yield view
    finally:
        if view.api is not None:
            view.api.close()


@pytest.fixture
def apex_load_executor(apex_settings: ApexSettings) -> LoadExecutor:
    """`--apex-load-workers` workers, here or on the Ray cluster `--apex-executor ray` names."""
    if apex_settings.executor == "ray":
        return RayExecutor(apex_settings.ray_address, apex_settings.load_workers)
    return LocalExecutor(apex_settings.load_workers)


def _docker_api() -> docker.APIClient | None:
    """docker-py's low-level client (a testcontainers dependency), or None without Docker."""
    try:
        import docker  # imported here: a run that loads nothing pays nothing for it

        return docker.from_env().api
    except Exception:  # no socket, no permission: the metrics gauges are the fallback
        return None
