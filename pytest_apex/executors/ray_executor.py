"""The Ray executor: the load's workers as Ray actors, one per node, merged exactly here.

`RayExecutor(address, workers)` connects to the cluster at `address` (``auto``,
``ray://host:10001``, ``host:port``; empty: starts a Ray instance of this machine for the
run, on 127.0.0.1), reserves one CPU per worker in a placement group (``STRICT_SPREAD``, one
worker per node, or ``SPREAD`` when there are fewer nodes than workers; the run's first line
says which), and starts a `LoadWorkerActor` in each bundle. The workers meet at a
`StartBarrier`, run their share of every stage on their own clocks and stream each stage's
encoded results back; the driver merges them with `decode_and_add` (`merge_shares`) and the
caller judges every threshold once, as for a local run.

A worker whose actor dies makes the stages it did not deliver inconclusive, naming its node.
Teardown kills every actor and removes the placement group it created, and shuts down only
a Ray connection it made itself. Ray is an optional extra: this module imports it only
when a run asks for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Final
from urllib.parse import urlsplit

from pytest_apex.executors.base import ExecutorFailed
from pytest_apex.executors.ray_actors import BARRIER_TIMEOUT_S, LoadWorkerActor, StartBarrier
from pytest_apex.executors.shares import merge_shares
from pytest_apex.load.engine import (
    EngineSettings,
    LoadPlanRefused,
    LoadTargetUnreachable,
    SessionFactory,
    check_open_files,
)
from pytest_apex.load.progress import Snapshot, Writer, combined, final_line
from pytest_apex.load.result import PlanResult, StageResult
from pytest_apex.load.stages import Stage

INSTALL_HINT: Final = "pip install 'pytest-apex[ray]'"
NAMESPACE: Final = "pytest-apex"
CONNECT_TIMEOUT_S: Final = 5.0  # a TCP answer from the address before Ray is asked to connect
PLACEMENT_TIMEOUT_S: Final = 60.0
LOOPBACK: Final = frozenset({"127.0.0.1", "localhost", "::1"})
# Ray turns a loopback address into the machine's routable one before it connects or binds
# (ray-project/ray#59110), which would connect past a cluster listening on 127.0.0.1 and open
# a run's own instance on every interface. With this variable off, its node address is
# 127.0.0.1. Read when Ray is imported, so it is set before the import.
LOOPBACK_ONLY_ENV: Final = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


class RayNotInstalled(ExecutorFailed):
    pass


class RayClusterUnreachable(ExecutorFailed):
    pass


def on_loopback(address: str) -> bool:
    """True for a run's own instance ("") and for a cluster listening on this machine only."""
    if not address:
        return True
    host = urlsplit(address if "://" in address else f"tcp://{address}").hostname
    return host in LOOPBACK


def import_ray(address: str = "") -> ModuleType:
    """Ray, or `RayNotInstalled` naming the extra to install."""
    if on_loopback(address) and "ray" not in sys.modules:
        os.environ.setdefault(LOOPBACK_ONLY_ENV, "0")
    try:
        import ray
    except ImportError as exc:
        raise RayNotInstalled(
            f"--apex-executor ray needs Ray, which is not installed here ({exc}); install the "
            f"extra: {INSTALL_HINT}"
        ) from None
    return ray


def _unreachable(address: str, timeout_s: float) -> str:
    """Why nothing answers at `address` (host:port or ray://host:port), "" when it does."""
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    if parts.hostname is None or parts.port is None:
        return ""  # "auto" and the like: Ray finds the cluster itself
    try:
        with socket.create_connection((parts.hostname, parts.port), timeout=timeout_s):
            return ""
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"


@contextlib.contextmanager
def connected(address: str, workers: int) -> Iterator[ModuleType]:
    """Ray, connected to `address` (or to an instance started here for the run); the
    connection is closed after only if this opened it."""
    ray = import_ray(address)
    # Asked first, so a bad address is said in seconds (Ray itself retries for minutes).
    if address and (why := _unreachable(address, CONNECT_TIMEOUT_S)):
        raise RayClusterUnreachable(
            f"the Ray cluster at {address!r} (--apex-ray-address) did not answer: {why}; start "
            "it (`ray start --head`) or point --apex-ray-address at its head"
        )
    if ray.is_initialized():
        yield ray  # the caller's own connection (a conftest's, a test's): theirs to close
        return
    tried = address or "a Ray instance of this machine"
    options: dict[str, Any] = {"namespace": NAMESPACE, "logging_level": logging.WARNING}
    if address:
        options["address"] = address
    else:
        # "local": a new instance even when another one of this machine is running (with
        # no address, Ray would join the newest it finds, or the one RAY_ADDRESS names).
        options.update(
            address="local", num_cpus=max(workers, os.cpu_count() or 1), include_dashboard=False
        )
    try:
        ray.init(**options)
    except Exception as exc:  # Ray raises ConnectionError, RuntimeError, ValueError ...
        raise RayClusterUnreachable(
            f"could not connect to {tried} (--apex-ray-address {address!r}): "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    try:
        yield ray
    finally:
        ray.shutdown()


@dataclass(frozen=True)
class Placement:
    group: Any
    strategy: str
    nodes: int

    def describe(self, count: int, what: str = "workers", run: str = "load") -> str:
        """``load executor ray: 3 workers on 3 nodes, STRICT_SPREAD (one per node)``."""
        where = (
            "one per node"
            if self.strategy == "STRICT_SPREAD"
            else f"fewer nodes ({self.nodes}) than {what}, so some nodes run more than one"
        )
        nodes = f"{self.nodes} node" + ("" if self.nodes == 1 else "s")
        return f"{run} executor ray: {count} {what} on {nodes}, {self.strategy} ({where})"


def place(ray: ModuleType, workers: int) -> Placement:
    """A placement group of one CPU per worker, spread over the cluster's nodes."""
    from ray.util.placement_group import placement_group, remove_placement_group

    nodes = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) >= 1]
    strategy = "STRICT_SPREAD" if len(nodes) >= workers else "SPREAD"
    group = placement_group([{"CPU": 1}] * workers, strategy=strategy)
    try:
        ray.get(group.ready(), timeout=PLACEMENT_TIMEOUT_S)
    except Exception as exc:
        remove_placement_group(group)
        cpus = sum(n.get("Resources", {}).get("CPU", 0) for n in nodes)
        raise ExecutorFailed(
            f"{workers} workers need one CPU each ({strategy}), but the cluster's "
            f"{len(nodes)} nodes with {cpus:g} CPUs in all could not place them within "
            f"{PLACEMENT_TIMEOUT_S:.0f} s ({type(exc).__name__}); add nodes or lower "
            "--apex-load-workers"
        ) from exc
    return Placement(group, strategy, len(nodes))


def in_bundle(remote: Any, placement: Placement, index: int, name: str) -> Any:
    """`remote` (a `ray.remote` class) to be started on bundle `index` of the placement
    group, one CPU, never restarted (a lost actor is reported, not silently replaced)."""
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    strategy = PlacementGroupSchedulingStrategy(placement.group, placement_group_bundle_index=index)
    return remote.options(num_cpus=1, name=name, max_restarts=0, scheduling_strategy=strategy)


def release(ray: ModuleType, placement: Placement, actors: Sequence[Any]) -> None:
    """Kills every actor a run made and removes its placement group, whatever happened."""
    from ray.util.placement_group import remove_placement_group

    for actor in actors:
        ray.kill(actor)
    remove_placement_group(placement.group)


def node_name(info: dict[str, str]) -> str:
    return f"node {info['address']} ({info['node_id'][:12]}, host {info['host']})"


def _plan_error(worker: int, node: str, exc: Any) -> Exception:
    """What a worker's plan raised, as the local engine would have raised it."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, LoadTargetUnreachable | LoadPlanRefused):
        return cause
    return ExecutorFailed(f"load worker {worker} on {node} failed: {cause or exc}")


@dataclass
class WorkerShares:
    """What each worker delivered: its stages in order, why it stopped early (if it did),
    and the node it ran on."""

    delivered: dict[int, list[StageResult]]
    nodes: list[str]
    lost: dict[int, str] = field(default_factory=dict)
    placement: str = ""


async def _collect(
    ray: ModuleType,
    streams: Sequence[Any],
    nodes: Sequence[str],
    budget_s: float,
    writer: Writer,
    interval_s: float,
) -> WorkerShares:
    collected = WorkerShares({worker: [] for worker in range(len(streams))}, list(nodes))
    live: dict[int, dict[int, Snapshot]] = {}
    last_line = -float("inf")

    async def follow(worker: int, stream: Any) -> None:
        nonlocal last_line
        try:
            async for ref in stream:
                kind, payload = await ref
                if kind == "stage":
                    collected.delivered[worker].append(StageResult.decode(payload))
                    continue
                snapshots = live.setdefault(payload.stage, {})
                snapshots[worker] = payload
                if time.monotonic() - last_line >= interval_s:
                    writer(combined(snapshots).line(), False)
                    last_line = time.monotonic()
        except ray.exceptions.RayTaskError as exc:
            raise _plan_error(worker, nodes[worker], exc) from None
        except ray.exceptions.RayError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            collected.lost[worker] = f"load worker {worker} on {nodes[worker]} died: {first}"

    tasks = [asyncio.ensure_future(follow(w, s)) for w, s in enumerate(streams)]
    # A plan that failed on one worker (the target unreachable, say) fails the run now.
    done, pending = await asyncio.wait(tasks, timeout=budget_s, return_when=asyncio.FIRST_EXCEPTION)
    for task in done:
        if (error := task.exception()) is not None:
            for other in pending:
                other.cancel()
            raise error
    for task in pending:
        task.cancel()
    for worker, task in enumerate(tasks):
        if task in pending:
            collected.lost.setdefault(
                worker,
                f"load worker {worker} on {nodes[worker]} gave no result within {budget_s:.0f} s",
            )
    return collected


@dataclass(frozen=True)
class RayExecutor:
    """`workers` load workers on the Ray cluster at `address` ("" starts one for the run)."""

    address: str = ""
    workers: int = 1

    def run(
        self,
        plan: Sequence[Stage],
        factory: SessionFactory,
        *,
        settings: EngineSettings,
        writer: Writer,
    ) -> PlanResult:
        shares = self.run_shares(plan, factory, settings=settings, writer=writer)
        merged = merge_shares(plan, shares.delivered, shares.lost, settings.window_s)
        for result in merged.stages:
            final_line(result, writer)
        return merged

    def run_shares(
        self,
        plan: Sequence[Stage],
        factory: SessionFactory,
        *,
        settings: EngineSettings,
        writer: Writer,
    ) -> WorkerShares:
        """Every worker's own results, before they are merged (`run` merges them)."""
        check_open_files(plan, self.workers)  # a node of a cluster is usually no roomier
        with connected(self.address, self.workers) as ray:
            placement = place(ray, self.workers)
            header = placement.describe(self.workers)
            writer(header, True)
            actors: list[Any] = []  # every actor this run made, to kill whatever happens
            try:
                shares = self._run_actors(ray, placement, plan, factory, settings, writer, actors)
            finally:
                release(ray, placement, actors)
        shares.placement = header
        return shares

    def _run_actors(
        self,
        ray: ModuleType,
        placement: Placement,
        plan: Sequence[Stage],
        factory: SessionFactory,
        settings: EngineSettings,
        writer: Writer,
        actors: list[Any],
    ) -> WorkerShares:
        run_id = uuid.uuid4().hex[:8]
        worker_class = ray.remote(LoadWorkerActor)
        barrier = ray.remote(StartBarrier).options(num_cpus=0, name=f"apex-start-{run_id}")
        actors.append(start := barrier.remote(self.workers))
        workers = [
            in_bundle(worker_class, placement, index, f"apex-load-{run_id}-{index}").remote(
                index, self.workers
            )
            for index in range(self.workers)
        ]
        actors.extend(workers)
        try:
            infos = ray.get([w.node.remote() for w in workers], timeout=BARRIER_TIMEOUT_S)
        except Exception as exc:
            raise ExecutorFailed(
                f"the load workers did not start on the cluster within {BARRIER_TIMEOUT_S:.0f} s "
                f"({type(exc).__name__}: {exc}); is pytest-apex (and the app's adapter) "
                "installed on every node?"
            ) from exc
        nodes = [node_name(info) for info in infos]
        streams = [w.run.remote(plan, factory, settings, start) for w in workers]
        budget = BARRIER_TIMEOUT_S + sum(s.duration_s + settings.grace_s + 5.0 for s in plan)
        return asyncio.run(
            _collect(ray, streams, nodes, budget, writer, settings.progress_interval_s)
        )
