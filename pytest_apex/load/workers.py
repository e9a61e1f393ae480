"""`workers=N`: N generator processes, one result.

One Python process drives about one core; a machine with more cores pushes more load with
more processes. Each worker (multiprocessing, *spawn*: no inherited event loop, sockets or
threads) runs its share of every stage (users or rate split, request cap split) and sends
back its results encoded; the parent merges them exactly (histograms with
`decode_and_add`), so a p95 over four workers is the p95 of every request, not an average
of four p95s (which is what k6 cannot give across instances).

Workers start their first stage at one shared instant (`time.monotonic` is system-wide on
Linux), after all of them have started, so their stages and time windows line up.
"""

from __future__ import annotations

import math
import multiprocessing
import queue
import time
from collections.abc import Callable, Sequence
from typing import Any

from pytest_apex.load.engine import (
    DEFAULT_SETTINGS,
    EngineSettings,
    LoadPlanRefused,
    LoadTargetUnreachable,
    SessionFactory,
    check_open_files,
    event_loop_factory,
    probe,
    run,
)
from pytest_apex.load.progress import Snapshot, Writer, combined, final_line, silent
from pytest_apex.load.result import PlanResult, merge_plans
from pytest_apex.load.stages import Stage

START_TIMEOUT_S = 60.0  # for every worker to import and report ready
SYNC_DELAY_S = 0.25  # between the last worker ready and the shared start


class LoadWorkerFailed(Exception):
    """A worker process failed or never answered; names the worker and why."""


def _worker_main(
    plan: Sequence[Stage],
    factory: SessionFactory,
    settings: EngineSettings,
    worker: int,
    workers: int,
    channel: Any,
    go: Any,
    start_at: Any,
) -> None:
    try:
        channel.put(("ready", worker, None))
        if not go.wait(START_TIMEOUT_S):
            channel.put(("error", worker, ("LoadWorkerFailed", "never told to start")))
            return

        def forward(snapshot: Snapshot) -> None:
            channel.put(("snapshot", worker, snapshot))

        result = run(
            plan,
            factory,
            settings=settings,
            worker=(worker, workers),
            start_at=start_at.value,
            on_snapshot=forward,
        )
        channel.put(("result", worker, result.encode()))
    except BaseException as exc:
        channel.put(("error", worker, (type(exc).__name__, str(exc))))


def _probe_once(factory: SessionFactory, timeout_s: float) -> None:
    import asyncio

    async def check() -> None:
        await factory.open()
        try:
            await probe(factory, timeout_s)
        finally:
            await factory.close()

    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        runner.run(check())


def run_workers(
    plan: Sequence[Stage],
    factory: SessionFactory,
    workers: int,
    *,
    settings: EngineSettings = DEFAULT_SETTINGS,
    writer: Writer = silent,
    getrlimit: Callable[[int], tuple[int, int]] | None = None,
) -> PlanResult:
    """Run `plan` over `workers` processes and merge their results into one."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if getrlimit is None:
        check_open_files(plan, workers)
    else:
        check_open_files(plan, workers, getrlimit=getrlimit)
    if settings.probe:
        _probe_once(factory, settings.probe_timeout_s)
    context = multiprocessing.get_context("spawn")
    channel = context.Queue()
    go = context.Event()
    start_at = context.Value("d", 0.0)
    processes = [
        context.Process(
            target=_worker_main,
            args=(plan, factory, settings, i, workers, channel, go, start_at),
            name=f"apex-load-worker-{i}",
            daemon=True,
        )
        for i in range(workers)
    ]
    for process in processes:
        process.start()
    budget = START_TIMEOUT_S + sum(s.duration_s + settings.grace_s + 5.0 for s in plan)
    deadline = time.monotonic() + budget
    ready: set[int] = set()
    results: dict[int, PlanResult] = {}
    live: dict[int, dict[int, Snapshot]] = {}
    last_line = -math.inf
    try:
        while len(results) < workers:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LoadWorkerFailed(
                    f"load workers {sorted(set(range(workers)) - set(results))} gave no result "
                    f"within {budget:.0f} s"
                )
            try:
                kind, worker, payload = channel.get(timeout=min(remaining, 1.0))
            except queue.Empty:
                dead = [i for i, p in enumerate(processes) if not p.is_alive() and i not in results]
                if dead and channel.empty():
                    raise LoadWorkerFailed(
                        f"load worker {dead[0]} exited (code {processes[dead[0]].exitcode}) "
                        "without a result"
                    ) from None
                continue
            if kind == "ready":
                ready.add(worker)
                if len(ready) == workers:
                    start_at.value = time.monotonic() + SYNC_DELAY_S
                    go.set()
            elif kind == "snapshot":
                snapshots = live.setdefault(payload.stage, {})
                snapshots[worker] = payload
                if time.monotonic() - last_line >= settings.progress_interval_s:
                    writer(combined(snapshots).line(), False)
                    last_line = time.monotonic()
            elif kind == "result":
                results[worker] = PlanResult.decode(payload)
            else:
                name, message = payload
                if name == "LoadTargetUnreachable":
                    raise LoadTargetUnreachable(message)
                if name == "LoadPlanRefused":
                    raise LoadPlanRefused(message)
                raise LoadWorkerFailed(f"load worker {worker} failed: {name}: {message}")
    finally:
        go.set()  # a worker still waiting must not wait out its start timeout
        for process in processes:
            process.join(timeout=settings.grace_s + 5.0)
            if process.is_alive():
                process.terminate()
                process.join(timeout=5.0)
    merged = merge_plans(results[i] for i in range(workers))
    for stage, result in zip(plan, merged.stages, strict=True):
        result.target = stage.target
        result.description = stage.describe()
        final_line(result, writer)
    return merged
