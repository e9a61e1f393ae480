"""Where the isolation suite's REST users run: a lifecycle decision, so a fixture.

`apex_rest_isolation(spec)` runs the REST scenario and returns its merged result: every user
in this process through `apex_new_user`, or, with ``--apex-executor ray``, dealt over
``--apex-load-workers`` actors of the Ray cluster, each user made there through the app's own
adapter. Override it in conftest.py to run the users somewhere else.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

import pytest

from pytest_apex.adapters.factory import DescribedUsers
from pytest_apex.app.model import AppDescription
from pytest_apex.executors.base import ExecutorFailed
from pytest_apex.fixtures import UserMaker
from pytest_apex.isolation.rest_scenario import (
    RestScenarioResult,
    RestScenarioSpec,
    run_rest_isolation,
)
from pytest_apex.settings import ApexSettings

RestIsolation = Callable[[RestScenarioSpec], Awaitable[RestScenarioResult]]


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

        users = DescribedUsers(apex_app, apex_endpoints, uuid.uuid4().hex[:8])
        try:
            result, placed = await rest_isolation_on_ray(
                spec, users, address=apex_settings.ray_address, shares=apex_settings.load_workers
            )
        except ExecutorFailed as exc:
            pytest.fail(str(exc), pytrace=False)
        print(f"\n{placed}")
        result.notes.append(placed)
        return result

    return on_ray
