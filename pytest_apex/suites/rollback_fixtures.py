"""The rollback drill's moves as fixtures a project overrides in its conftest.py.

- `apex_rollout`: the description's [rollout] (skips the drill without one);
- `apex_read_release`: which release the rolled-out service answers as, now;
- `apex_deploy`: deploys a release with fault switches (the description says how);
- `apex_roll_back`: puts a release back after the decision; by default the documented
  command (``python -m pytest_apex.rollback``) on a compose target, else the deployer.

A team whose rollback is a pipeline, a Helm rollback or an Argo abort overrides
`apex_roll_back` (and `apex_deploy`) with theirs; the drill's checks stay the same.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Final

import httpx
import pytest

from pytest_apex.app.model import AppDescription, Rollout
from pytest_apex.rollback.deploy import (
    DeployError,
    ReadRelease,
    address_env,
    deployer_for,
    fault_env,
    refuse_contract,
    release_reader,
    wait_for_release,
)
from pytest_apex.suites.rollback_drill import RollbackRun, run_rollback
from pytest_apex.targets.base import Target
from pytest_apex.targets.compose import ComposeTarget

RELEASE_TIMEOUT_S: Final = 120.0
READ_TIMEOUT_S: Final = 10.0

Deploy = Callable[[str, tuple[str, ...]], Awaitable[float]]
RollBack = Callable[[str, float], Awaitable[RollbackRun]]


@pytest.fixture
def apex_rollout(apex_app: AppDescription) -> Rollout:
    if apex_app.rollout is None:
        pytest.skip(
            f"{apex_app.name} describes no [rollout] (which service rolls out, its releases, "
            "the rows a rollback must keep): the rollback drill has nothing to deploy"
        )
    return apex_app.rollout


@pytest.fixture
def release_http() -> Iterator[httpx.Client]:
    # Its own client, with no idle connection kept: each redeploy replaces the server.
    limits = httpx.Limits(max_keepalive_connections=0)
    with httpx.Client(timeout=httpx.Timeout(READ_TIMEOUT_S), limits=limits) as client:
        yield client


@pytest.fixture
def apex_read_release(
    apex_app: AppDescription,
    apex_rollout: Rollout,
    apex_endpoints: dict[str, str],
    release_http: httpx.Client,
) -> ReadRelease:
    service = apex_app.services[apex_rollout.service]
    if service.liveness is None or not apex_rollout.release_field:
        pytest.skip(
            f"{apex_rollout.service} has no liveness route naming its release "
            "(rollout.release_field): the drill could not tell a rollback from a no-op"
        )
    return release_reader(
        lambda url: release_http.get(url).json(),
        apex_endpoints[apex_rollout.service],
        service.liveness.path,
        apex_rollout.release_field,
    )


@pytest.fixture
def apex_deploy(
    apex_app: AppDescription,
    apex_rollout: Rollout,
    apex_target: Target,
    apex_endpoints: dict[str, str],
    apex_read_release: ReadRelease,
) -> Deploy:
    """`await apex_deploy(release, faults)`: deployed and answering as itself; seconds."""
    keep = address_env(apex_rollout, apex_endpoints.get(apex_rollout.service, ""))

    async def deploy(name: str, faults: tuple[str, ...]) -> float:
        release = apex_rollout.releases[name]
        refuse_contract(apex_rollout, release)
        deployer = deployer_for(release, apex_target)
        env = {**fault_env(apex_app.faults, faults), **keep}
        started = time.monotonic()
        await asyncio.to_thread(deployer.deploy, release, env)
        await asyncio.to_thread(wait_for_release, apex_read_release, name, RELEASE_TIMEOUT_S)
        return time.monotonic() - started

    return deploy


@pytest.fixture
def apex_roll_back(apex_target: Target, apex_deploy: Deploy) -> RollBack:
    """`await apex_roll_back(release, decided_at)`: the release back, timed from the decision."""

    async def roll_back(release: str, decided_at: float) -> RollbackRun:
        if isinstance(apex_target, ComposeTarget):
            return await run_rollback(apex_target.project, apex_target.files, release, decided_at)
        try:
            await apex_deploy(release, ())
        except DeployError as exc:
            return RollbackRun(f"deploy {release}", 1, str(exc), time.monotonic() - decided_at)
        return RollbackRun(f"deploy {release}", 0, "", time.monotonic() - decided_at)

    return roll_back
