"""The isolation suite's users spread over a Ray cluster: one share of them per node.

`rest_isolation_on_ray` and `agent_isolation_on_ray` place N share actors the way the
load's workers are placed (one CPU each, ``STRICT_SPREAD`` or ``SPREAD``), deal the users
over them (`share_indices`) and drive them with the same coordinator as a run in one
process (`run_shares`, `run_agent_shares`), phase by phase: REST users set up, then each
round every share writes and every share reads; streaming users sign up and set up, then
each round every share starts its users' runs at once and, once every run is accepted,
finishes the round (REST during the runs, cancels, reconnects, failures, floods, then probes
of other users wherever they run), then the burst, the drain and the close.

After each phase every share learns every identity the others issued and what it needs to
probe their users, so a user on node A probes users on node B, and whatever it received is
scanned against the identities of the whole run: a leak across machines is caught and
attributed like one within a process. Results are merged here and judged once; the app's
gauges are read here, once for the run.

An actor that dies drops out with its node named (`ShareLost`), the others finish, and the
suite judges the run inconclusive. Teardown kills every actor and removes the placement group.
"""

from __future__ import annotations

import asyncio
import contextlib
import copyreg
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Final, TypeVar

from pytest_apex.adapters.factory import DescribedUsers
from pytest_apex.executors.base import ExecutorFailed
from pytest_apex.executors.ray_actors import (
    BARRIER_TIMEOUT_S,
    AgentShareActor,
    RestShareActor,
)
from pytest_apex.executors.ray_executor import (
    Placement,
    connected,
    in_bundle,
    node_name,
    place,
    release,
)
from pytest_apex.isolation.agent_scenario import (
    AgentPublished,
    AgentScenarioResult,
    AgentScenarioSpec,
    run_agent_shares,
)
from pytest_apex.isolation.cleanup import ReadGauges
from pytest_apex.isolation.rest_scenario import (
    Published,
    RestScenarioResult,
    RestScenarioSpec,
    run_shares,
)
from pytest_apex.isolation.roles import Role
from pytest_apex.isolation.shares import ShareLost, share_indices

SHARE_LABEL: Final = "isolation share"


def _mapping_proxy(data: dict[str, Any]) -> MappingProxyType[str, Any]:
    return MappingProxyType(data)


def _reduce_mapping_proxy(proxy: MappingProxyType[str, Any]) -> tuple[Any, tuple[Any, ...]]:
    return _mapping_proxy, (dict(proxy),)


# An app description holds read-only mappings, which pickle cannot copy; sent to an actor, a
# description goes as its plain values and comes back read-only (only runs that use Ray
# import this module).
copyreg.pickle(MappingProxyType, _reduce_mapping_proxy)


class _ActorShare:
    """An actor of a share as the coordinator drives it: a lost actor is a `ShareLost`
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


class RestActorShare(_ActorShare):
    """A `RestShareActor` behind the REST coordinator's `RestShareHandle`."""

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


class AgentActorShare(_ActorShare):
    """An `AgentShareActor` behind the streaming coordinator's `AgentShareHandle`."""

    async def sign_up(self) -> AgentPublished:
        published: AgentPublished = await self._call("sign_up")
        return published

    async def setup(self) -> AgentPublished:
        published: AgentPublished = await self._call("setup")
        return published

    async def learn(self, published: Sequence[AgentPublished]) -> None:
        await self._call("learn", published)

    async def start_round(self, round_no: int, roles: Mapping[int, Role]) -> AgentPublished:
        published: AgentPublished = await self._call("start_round", round_no, roles)
        return published

    async def finish_round(
        self, round_no: int, roles: Mapping[int, Role], partners: Mapping[int, Sequence[int]]
    ) -> AgentPublished:
        published: AgentPublished = await self._call("finish_round", round_no, roles, partners)
        return published

    async def burst(self, runs: int) -> AgentPublished:
        published: AgentPublished = await self._call("burst", runs)
        return published

    async def drain(self) -> None:
        await self._call("drain")

    async def close(self) -> AgentPublished:
        published: AgentPublished = await self._call("close")
        return published

    async def outcome(self) -> AgentScenarioResult:
        result: AgentScenarioResult = await self._call("outcome")
        return result


Share = TypeVar("Share", bound=_ActorShare)
# (share number, its users) -> the actor's constructor arguments
ActorArguments = Callable[[int, list[int]], tuple[Any, ...]]


@contextlib.asynccontextmanager
async def _placed(
    actor_class: type,
    handle: type[Share],
    arguments: ActorArguments,
    users: int,
    shares: int,
    address: str,
) -> AsyncIterator[tuple[list[Share], str]]:
    """`shares` actors of `actor_class` placed over the cluster, each with its users dealt;
    the handles and the line that says how they were placed. Every actor is killed and the
    placement group removed on the way out."""
    with connected(address, shares) as ray:
        # Placing waits for the cluster (up to a minute): off the event loop, which other
        # fixtures of the session share.
        placement = await asyncio.to_thread(place, ray, shares)
        actors: list[Any] = []
        try:
            infos = await _start(ray, placement, actor_class, arguments, users, shares, actors)
            handles = [
                handle(ray, actor, number, node_name(info))
                for number, (actor, info) in enumerate(zip(actors, infos, strict=True))
            ]
            yield handles, placement.describe(shares, "shares", "isolation")
        finally:
            release(ray, placement, actors)


async def _start(
    ray: Any,
    placement: Placement,
    actor_class: type,
    arguments: ActorArguments,
    users: int,
    shares: int,
    actors: list[Any],
) -> list[dict[str, str]]:
    run_id = uuid.uuid4().hex[:8]
    remote = ray.remote(actor_class)
    for number, indices in enumerate(share_indices(users, shares)):
        share = in_bundle(remote, placement, number, f"apex-isolation-{run_id}-{number}")
        actors.append(share.remote(*arguments(number, indices)))
    try:
        infos: list[dict[str, str]] = await asyncio.wait_for(
            asyncio.gather(*(a.node.remote() for a in actors)), BARRIER_TIMEOUT_S
        )
    except Exception as exc:
        raise ExecutorFailed(
            f"the isolation shares did not start on the cluster within {BARRIER_TIMEOUT_S:.0f} s"
            f" ({type(exc).__name__}: {exc}); is pytest-apex (and the app's adapter) "
            "installed on every node?"
        ) from exc
    return infos


def _dealt(users: int, shares: int) -> int:
    return max(1, min(shares, users))


async def rest_isolation_on_ray(
    spec: RestScenarioSpec, users: DescribedUsers, *, address: str = "", shares: int = 2
) -> tuple[RestScenarioResult, str]:
    """The REST scenario with its users dealt over `shares` actors of the cluster at
    `address`; the merged result and the line that says how the shares were placed."""
    placed = _placed(
        RestShareActor,
        RestActorShare,
        lambda number, indices: (spec, indices, users),
        spec.users,
        _dealt(spec.users, shares),
        address,
    )
    async with placed as (handles, header):
        return await run_shares(spec, handles), header


async def agent_isolation_on_ray(
    spec: AgentScenarioSpec,
    users: DescribedUsers,
    read_gauges: ReadGauges | None = None,
    *,
    address: str = "",
    shares: int = 2,
) -> tuple[AgentScenarioResult, str]:
    """The streaming scenario with its users dealt over `shares` actors; the app's gauges
    (`read_gauges`) are read here, once for the whole run."""
    placed = _placed(
        AgentShareActor,
        AgentActorShare,
        lambda number, indices: (spec, indices, users, number),
        spec.users,
        _dealt(spec.users, shares),
        address,
    )
    async with placed as (handles, header):
        return await run_agent_shares(spec, handles, read_gauges), header
