"""Where the isolation suite's users run: a lifecycle decision, so fixtures.

`apex_rest_isolation(spec)` and `apex_agent_isolation(spec, gauges)` run the REST and the
streaming scenario and return the merged result: every user in this process through
`apex_new_user`, or, with ``--apex-executor ray``, dealt over ``--apex-load-workers`` actors
of the Ray cluster, each user made there through the adapter the app's description names (a
conftest's own `apex_new_user` cannot travel to another machine). Override them in
conftest.py to run the users somewhere else.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

import pytest

from pytest_apex.adapters.factory import DescribedUsers
from pytest_apex.app.model import AppDescription
from pytest_apex.executors.base import ExecutorFailed
from pytest_apex.fixtures import UserMaker
from pytest_apex.isolation.agent_scenario import (
    AgentScenarioResult,
    AgentScenarioSpec,
    run_agent_isolation,
)
from pytest_apex.isolation.cleanup import ReadGauges
from pytest_apex.isolation.rest_scenario import (
    RestScenarioResult,
    RestScenarioSpec,
    run_rest_isolation,
)
from pytest_apex.settings import ApexSettings

RestIsolation = Callable[[RestScenarioSpec], Awaitable[RestScenarioResult]]
AgentIsolation = Callable[[AgentScenarioSpec, ReadGauges | None], Awaitable[AgentScenarioResult]]


def _described_users(app: AppDescription, endpoints: dict[str, str]) -> DescribedUsers:
    return DescribedUsers(app, endpoints, uuid.uuid4().hex[:8])


def _placed(result_notes: list[str], placed: str) -> None:
    print(f"\n{placed}")
    result_notes.append(placed)


@pytest.fixture
def apex_rest_isolation(
    apex_settings: ApexSettings,
    apex_app: AppDescription,
    apex_endpoints: dict[str, str],
    apex_new_user: UserMaker,
) -> RestIsolation:
    """Runs the REST isolation scenario here, or spread over the Ray cluster."""
    if apex_settings.executor != "ray":

        async def here(spec: RestScenarioSpec) -> RestScenarioResult:
            # UserSessions are ResourceSessions when the app has resources; one that is not
            # is a failed setup the scenario counts, not a crash.
            return await run_rest_isolation(spec, apex_new_user)  # type: ignore[arg-type]

        return here

    async def on_ray(spec: RestScenarioSpec) -> RestScenarioResult:
        # Imported only when asked for: it teaches pickle to send the app's description.
        from pytest_apex.executors.ray_isolation import rest_isolation_on_ray

        users = _described_users(apex_app, apex_endpoints)
        try:
            result, placed = await rest_isolation_on_ray(
                spec, users, address=apex_settings.ray_address, shares=apex_settings.load_workers
            )
        except ExecutorFailed as exc:
            pytest.fail(str(exc), pytrace=False)
        _placed(result.notes, placed)
        return result

    return on_ray


@pytest.fixture
def apex_agent_isolation(
    apex_settings: ApexSettings,
    apex_app: AppDescription,
    apex_endpoints: dict[str, str],
    apex_new_user: UserMaker,
) -> AgentIsolation:
    """Runs the streaming isolation scenario here, or spread over the Ray cluster."""
    if apex_settings.executor != "ray":

        async def here(spec: AgentScenarioSpec, gauges: ReadGauges | None) -> AgentScenarioResult:
            # UserSessions are StreamingAgentSessions when the app runs agents.
            return await run_agent_isolation(spec, apex_new_user, gauges)  # type: ignore[arg-type]

        return here

    async def on_ray(spec: AgentScenarioSpec, gauges: ReadGauges | None) -> AgentScenarioResult:
        from pytest_apex.executors.ray_isolation import agent_isolation_on_ray

        users = _described_users(apex_app, apex_endpoints)
        try:
            result, placed = await agent_isolation_on_ray(
                spec,
                users,
                gauges,
                address=apex_settings.ray_address,
                shares=apex_settings.load_workers,
            )
        except ExecutorFailed as exc:
            pytest.fail(str(exc), pytrace=False)
        _placed(result.notes, placed)
        return result

    return on_ray
