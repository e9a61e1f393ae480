"""What runs on the Ray cluster: one load worker per actor, the barrier they start at, and
the shares of the isolation suite's users (REST and streaming).

Plain classes, made actors by the driver (`ray.remote(LoadWorkerActor)`), so this module
imports without Ray. A worker runs the same engine as a local one (`run_plan` with its share
of every stage) on its own node and its own monotonic clock; its results travel encoded
(`StageResult.encode()`: HdrHistograms as their base64 blobs), stage by stage, so a worker
that dies in stage 3 has already delivered stages 1 and 2.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Final

from pytest_apex.adapters.factory import DescribedUsers
from pytest_apex.isolation.agent_scenario import (
    AgentPublished,
    AgentScenarioResult,
    AgentScenarioSpec,
    AgentShare,
)
from pytest_apex.isolation.rest_scenario import (
    Published,
    RestScenarioResult,
    RestScenarioSpec,
    RestShare,
)
from pytest_apex.isolation.roles import Role
from pytest_apex.load.engine import EngineSettings, SessionFactory, run_plan
from pytest_apex.load.progress import Snapshot
from pytest_apex.load.result import StageResult
from pytest_apex.load.stages import Stage

BARRIER_TIMEOUT_S: Final = 60.0  # for every worker to be ready (imported, target probed)
DONE: Final = None


class StartBarrier:
    """Opens once `parties` workers have arrived: the first stage starts together on every
    node without comparing any two machines' clocks."""

    def __init__(self, parties: int) -> None:
        self._parties = parties
        self._arrived = 0
        self._open = asyncio.Event()

    async def arrive(self) -> None:
        self._arrived += 1
        if self._arrived >= self._parties:
            self._open.set()
        try:
            await asyncio.wait_for(self._open.wait(), BARRIER_TIMEOUT_S)
        except TimeoutError:
            raise TimeoutError(
                f"only {self._arrived} of {self._parties} load workers were ready "
                f"within {BARRIER_TIMEOUT_S:.0f} s"
            ) from None


class LoadWorkerActor:
    """Worker `worker` of `workers`: its share of every stage, streamed back stage by stage."""

    def __init__(self, worker: int, workers: int) -> None:
        self.worker = worker
        self.workers = workers

    def node(self) -> dict[str, str]:
        """Where this worker runs: node id, address and host name, to name it in a verdict."""
        import ray

        return {
            "node_id": ray.get_runtime_context().get_node_id(),
            "address": ray.util.get_node_ip_address(),  # type: ignore[no-untyped-call]
            "host": socket.gethostname(),
            "pid": str(os.getpid()),
        }

    async def run(
        self,
        plan: Sequence[Stage],
        factory: SessionFactory,
        settings: EngineSettings,
        barrier: Any,
    ) -> AsyncIterator[tuple[str, Any]]:
        """Yields ``("snapshot", Snapshot)`` live and ``("stage", encoded StageResult)`` as
        each stage ends; raises what the plan raised (the target unreachable, say)."""
        items: asyncio.Queue[tuple[str, Any] | None] = asyncio.Queue()

        async def all_ready() -> None:
            await barrier.arrive.remote()

        def stage_done(result: StageResult) -> None:
            items.put_nowait(("stage", result.encode()))

        def snapshot(line: Snapshot) -> None:
            items.put_nowait(("snapshot", line))

        async def drive() -> None:
            try:
                await run_plan(
                    plan,
                    factory,
                    settings=settings,
                    worker=(self.worker, self.workers),
                    barrier=all_ready,
                    on_stage=stage_done,
                    on_snapshot=snapshot,
                )
            finally:
                items.put_nowait(DONE)

        task = asyncio.ensure_future(drive())
        while (item := await items.get()) is not DONE:
            yield item
        await task  # the plan's own exception, if it raised one


class RestShareActor:
    """A share of the REST isolation scenario's users on one node (`RestShare` phase by
    phase), its users made through the app's own adapter in this process."""

    def __init__(self, spec: RestScenarioSpec, indices: Sequence[int], users: DescribedUsers):
        self.users = users
        # The adapter's UserSessions are the scenario's ResourceSessions when the app has
        # resources (a session that cannot create() is a failed setup, counted).
        self.share = RestShare(spec, indices, users)  # type: ignore[arg-type]

    node = LoadWorkerActor.node

    async def setup(self) -> Published:
        return await self.share.setup()

    async def learn(self, published: Sequence[Published]) -> None:
        await self.share.learn(published)

    async def write(self, round_no: int) -> Published:
        return await self.share.write(round_no)

    async def read(self) -> Published:
        return await self.share.read()

    async def outcome(self) -> RestScenarioResult:
        # The run is over for this share: its users' sessions close before it answers.
        await self.users.aclose()
        return await self.share.outcome()


class AgentShareActor:
    """A share of the streaming isolation scenario's users on one node (`AgentShare` phase
    by phase): their sockets, their runs and everything they received live here."""

    def __init__(
        self, spec: AgentScenarioSpec, indices: Sequence[int], users: DescribedUsers, share: int
    ):
        self.users = users
        # The adapter's UserSessions are the scenario's StreamingAgentSessions when the app
        # runs agents (the description says so; the suite asks only then).
        self.share = AgentShare(spec, indices, users, share)  # type: ignore[arg-type]

    node = LoadWorkerActor.node

    async def sign_up(self) -> AgentPublished:
        return await self.share.sign_up()

    async def setup(self) -> AgentPublished:
        return await self.share.setup()

    async def learn(self, published: Sequence[AgentPublished]) -> None:
        await self.share.learn(published)

    async def start_round(self, round_no: int, roles: Mapping[int, Role]) -> AgentPublished:
        return await self.share.start_round(round_no, roles)

    async def finish_round(
        self, round_no: int, roles: Mapping[int, Role], partners: Mapping[int, Sequence[int]]
    ) -> AgentPublished:
        return await self.share.finish_round(round_no, roles, partners)

    async def burst(self, runs: int) -> AgentPublished:
        return await self.share.burst(runs)

    async def drain(self) -> None:
        await self.share.drain()

    async def close(self) -> AgentPublished:
        return await self.share.close()

    async def outcome(self) -> AgentScenarioResult:
        await self.users.aclose()
        result = await self.share.outcome()
        # The records' events were bound to this actor's loop, which pickle cannot send;
        # the run is over, so fresh ones say the same.
        for run in result.runs:
            run.changed = asyncio.Event()
        for probe in result.probes:
            probe.answered = asyncio.Event()
        return result
