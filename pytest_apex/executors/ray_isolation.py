"""The isolation suite's REST users spread over a Ray cluster: one share of them per node.

`rest_isolation_on_ray(spec, users, address=..., shares=N)` places N `RestShareActor`s the
way the load's workers are placed (one CPU each, ``STRICT_SPREAD`` or ``SPREAD``), deals the
users over them (`share_indices`) and drives them with the same coordinator as a local run
(`run_shares`): every share sets up its users, then each round every share writes, every
share reads. After each phase every share learns every identity the others issued and,
after setup, every user's probe targets, so a user on node A probes users on node B, and
whatever it receives is scanned against the identities of the whole run: a leak across
machines is caught and attributed like one within a process. Breaches, counts and errors
are merged here and judged once.

An actor that dies drops out with its node named (`ShareLost`), the others finish, and the
suite judges the run inconclusive. Teardown kills every actor and removes the placement group.
"""

from __future__ import annotations

import asyncio
import copyreg
import uuid
from collections.abc import Sequence
from types import MappingProxyType
from typing import Any, Final

from pytest_apex.adapters.factory import DescribedUsers
from pytest_apex.executors.base import ExecutorFailed
from pytest_apex.executors.ray_actors import BARRIER_TIMEOUT_S, RestShareActor
from pytest_apex.executors.ray_executor import Placement, connected, node_name, place
from pytest_apex.isolation.rest_scenario import (
    Published,
    RestScenarioResult,
    RestScenarioSpec,
    ShareLost,
    run_shares,
    share_indices,
)

SHARE_LABEL: Final = "isolation share"


def _mapping_proxy(data: dict[str, Any]) -> MappingProxyType[str, Any]:
    return MappingProxyType(data)


def _reduce_mapping_proxy(proxy: MappingProxyType[str, Any]) -> tuple[Any, tuple[Any, ...]]:
    return _mapping_proxy, (dict(proxy),)


# An app description holds read-only mappings, which pickle cannot copy; sent to an actor, a
# description goes as its plain values and comes back read-only (only runs that use Ray
# import this module).
copyreg.pickle(MappingProxyType, _reduce_mapping_proxy)


class ActorShare:
    """A `RestShareActor` as the coordinator drives it: a lost actor is a `ShareLost`
    naming the share and its node."""

    def __init__(self, ray: Any, actor: Any, number: int, node: str) -> None:
        self.ray = ray
        self.actor = actor
        self.name = f"{SHARE_LABEL} {number} on {node}"

    async def _call(self, method: str, *args: Any) -> Any:
        try:
            return await getattr(self.actor, method).remote(*args)
        except self.ray.exceptions.RayActorError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ShareLost(f"{self.name} died during {method}: {first}") from None
        except self.ray.exceptions.RayTaskError as exc:
            # What the share itself raised is a bug of the share, not of the app: said as such.
            raise ShareLost(f"{self.name} failed during {method}: {exc.cause or exc}") from None

    async def setup(self) -> Published:
        published: Published = await self._call("setup")
        return published

    async def learn(self, published: Sequence[Published]) -> None:
        await self._call("learn", published)

    async def write(self, round_no: int) -> Published:
        published: Published = await self._call("write", round_no)
        return published

    async def read(self) -> Published:
        published: Published = await self._call("read")
        return published

    async def outcome(self) -> RestScenarioResult:
        result: RestScenarioResult = await self._call("outcome")
        return result


async def rest_isolation_on_ray(
    spec: RestScenarioSpec, users: DescribedUsers, *, address: str = "", shares: int = 2
) -> tuple[RestScenarioResult, str]:
    """The scenario with its users dealt over `shares` actors of the cluster at `address`;
    returns the merged result and the line that says how the shares were placed."""
    shares = max(1, min(shares, spec.users))
    with connected(address, shares) as ray:
        # Placing waits for the cluster (up to a minute): off the event loop, which other
        # fixtures of the session share.
        placement = await asyncio.to_thread(place, ray, shares)
        header = placement.describe(shares, "shares", "isolation")
        actors: list[Any] = []
        try:
            handles = await _start(ray, placement, spec, users, shares, actors)
            result = await run_shares(spec, handles)
        finally:
            for actor in actors:
                ray.kill(actor)
            from ray.util.placement_group import remove_placement_group

            remove_placement_group(placement.group)
    return result, header


async def _start(
    ray: Any,
    placement: Placement,
    spec: RestScenarioSpec,
    users: DescribedUsers,
    shares: int,
    actors: list[Any],
) -> list[ActorShare]:
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    run_id = uuid.uuid4().hex[:8]
    share_class = ray.remote(RestShareActor)
    for number, indices in enumerate(share_indices(spec.users, shares)):
        strategy = PlacementGroupSchedulingStrategy(
            placement.group, placement_group_bundle_index=number
        )
        options = share_class.options(
            num_cpus=1,
            name=f"apex-isolation-{run_id}-{number}",
            max_restarts=0,
            scheduling_strategy=strategy,
        )
        actors.append(options.remote(spec, indices, users))
    try:
        infos = await asyncio.wait_for(
            asyncio.gather(*(a.node.remote() for a in actors)), BARRIER_TIMEOUT_S
        )
    except Exception as exc:
        raise ExecutorFailed(
            f"the isolation shares did not start on the cluster within {BARRIER_TIMEOUT_S:.0f} s"
            f" ({type(exc).__name__}: {exc}); is pytest-apex (and the app's adapter) "
            "installed on every node?"
        ) from exc
    return [
        ActorShare(ray, actor, number, node_name(info))
        for number, (actor, info) in enumerate(zip(actors, infos, strict=True))
    ]
