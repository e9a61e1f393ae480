"""The engine: runs a stage plan against any target through a `SessionFactory`.

A virtual user runs `Session.run(ops)`; every operation it wants timed goes through
``await ops.timed("name", awaitable)`` and every pause through ``await ops.think(s)``. The
engine owns time: it starts users on the ramp (closed model) or sessions on the arrival
schedule (open model), stops the stage at its duration or its request cap, measures, and
times each operation from its *intended* start in the open model.

Before any stage runs, the plan is checked against the open-files limit (`LoadPlanRefused`)
and the target is probed once (`LoadTargetUnreachable`): 150 users timing out one by one
would say the same thing, slowly and 150 times.

Seams: the clock (`Clock`), the error classifier, the CPU reader, the progress writer; the
HTTP client lives in the session factory (`pytest_apex.load.http`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import inspect
import resource
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol, TypeVar

from pytest_apex.load.generator import (
    CPU_LIMIT_PERCENT,
    LAG_P99_LIMIT_S,
    TICK_S,
    Clock,
    GeneratorMonitor,
)
from pytest_apex.load.measure import (
    CONNECTION,
    CONNECTION_REFUSED,
    DEFAULT_WINDOW_S,
    OTHER,
    TIMEOUT,
    StageRecorder,
)
from pytest_apex.load.progress import Snapshot, Writer, silent
from pytest_apex.load.result import PlanResult, StageResult
from pytest_apex.load.stages import ClosedStage, OpenStage, Stage, peak_users

T = TypeVar("T")

# Sockets, pipes and files the process needs besides one per user (the loop, logs, workers).
OPEN_FILES_HEADROOM: Final = 64
SESSION_OP: Final = "(session)"  # where a session's own bug (not an operation's) is counted


class LoadTargetUnreachable(Exception):
    """The target did not answer the probe made before any stage ran."""


class LoadPlanRefused(Exception):
    """The plan cannot run on this machine as it is (it says which limit and how to raise it)."""


class OperationFailed(Exception):
    """An operation failed with an error of `kind` (``"5xx"``, ``"timeout"``, ...).

    Raised by `Ops.timed` after the error was counted, so a session can stop its iteration
    (no point posting a message after the login failed); a session's own operations may
    raise it too, to name the kind themselves.
    """

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind
        self.detail = detail


class StageOver(BaseException):
    """The stage is over (duration or request cap): the session must return.

    A BaseException, so a session's ``except Exception`` cannot swallow it and keep going.
    """


class MonotonicClock:
    """Real time. `time.monotonic` is system-wide on Linux, so worker processes agree on it."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def classify(exc: BaseException) -> str:
    """The error kind of an exception an operation raised."""
    if isinstance(exc, OperationFailed):
        return exc.kind
    if isinstance(exc, TimeoutError):
        return TIMEOUT
    if isinstance(exc, ConnectionRefusedError):
        return CONNECTION_REFUSED
    if isinstance(exc, OSError):
        if exc.errno == errno.ECONNREFUSED:
            return CONNECTION_REFUSED
        return CONNECTION
    return OTHER


@dataclass(frozen=True)
class EngineSettings:
    """Plain values that shape a run (picklable: worker processes receive them)."""

    window_s: float = DEFAULT_WINDOW_S
    grace_s: float = 5.0  # how long in-flight operations may finish after a stage ends
    probe_timeout_s: float = 5.0
    progress_interval_s: float = 1.0
    cpu_limit_percent: float = CPU_LIMIT_PERCENT
    lag_p99_limit_s: float = LAG_P99_LIMIT_S
    tick_s: float = TICK_S
    probe: bool = True
    # Ops left out of the live line's p95 (milestones such as an agent's final event are
    # judged by their own thresholds; in the p95 they would read as slow responses).
    live_exclude: tuple[str, ...] = ()


DEFAULT_SETTINGS: Final = EngineSettings()


class _StageState:
    __slots__ = (
        "active",
        "cap",
        "classify",
        "clock",
        "deadline",
        "dropped",
        "due",
        "event",
        "now",
        "open",
        "peak",
        "recorder",
        "requests",
        "sessions",
        "start",
        "stopped",
        "stopped_by",
    )

    def __init__(
        self, clock: Clock, recorder: StageRecorder, duration_s: float, cap: int, open_: bool
    ) -> None:
        self.clock = clock
        self.now = clock.now
        self.recorder = recorder
        self.start = clock.now()
        self.deadline = self.start + duration_s
        self.cap = cap
        self.open = open_
        self.classify: Callable[[BaseException], str] = classify
        self.requests = 0
        self.sessions = 0
        self.active = 0
        self.peak = 0
        self.due = 0
        self.dropped = 0
        self.stopped = False
        self.stopped_by = "duration"
        self.event = asyncio.Event()

    def stop(self, reason: str) -> None:
        if not self.stopped:
            self.stopped = True
            self.stopped_by = reason
            self.event.set()

    async def wait_stop(self, timeout: float) -> bool:
        """Wait until the stage stops or `timeout` passes on the clock; True if it stopped."""
        if self.stopped or timeout <= 0:
            return self.stopped
        waiter = asyncio.ensure_future(self.event.wait())
        sleeper = asyncio.ensure_future(self.clock.sleep(timeout))
        try:
            await asyncio.wait((waiter, sleeper), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (waiter, sleeper):
                task.cancel()
        return self.stopped


class Ops:
    """What a session uses to time operations and to think; one per session run."""

    __slots__ = ("_intended", "_state", "user")

    def __init__(self, state: _StageState, user: int, intended: float | None) -> None:
        self._state = state
        self._intended = intended
        self.user = user

    @property
    def stopping(self) -> bool:
        return self._state.stopped

    async def timed(self, name: str, operation: Awaitable[T]) -> T:
        """Await `operation`, timing it as `name`; raises `OperationFailed` if it failed.

        In the open model the session's first operation is timed from the session's intended
        start (the arrival schedule), the rest from their own start; service time (from the
        actual start) is kept beside it.
        """
        st = self._state
        start = st.now()
        # Past its cap or its end (even if nothing let the stage's own timer run): over.
        if st.stopped or st.requests >= st.cap or start >= st.deadline:
            st.stop("max_requests" if st.requests >= st.cap else "duration")
            if inspect.iscoroutine(operation):
                operation.close()
            raise StageOver
        st.requests += 1
        intended = start if self._intended is None else self._intended
        self._intended = None
        try:
            result = await operation
        except asyncio.CancelledError:
            # Still running when the stage's grace ran out: a timeout, not a lost sample.
            st.recorder.record(name, intended - st.start, 0.0, None, TIMEOUT)
            raise
        except Exception as exc:
            kind = st.classify(exc)
            st.recorder.record(name, intended - st.start, 0.0, None, kind)
            if isinstance(exc, OperationFailed):
                raise
            raise OperationFailed(kind, f"{type(exc).__name__}: {exc}") from exc
        end = st.now()
        st.recorder.record(
            name, intended - st.start, end - intended, (end - start) if st.open else None
        )
        return result

    def now(self) -> float:
        """The engine's clock, for a milestone inside an operation (`record_since`)."""
        return self._state.now()

    def record_since(self, name: str, started: float) -> None:
        """Record a success of `name` that took from `started` (an `now()` reading) until now.

        For a milestone inside an operation timed with `timed` (an agent run's first event,
        inside its run to the final one): a measurement, not another request, so it does not
        count against the stage's cap.
        """
        st = self._state
        end = st.now()
        st.recorder.record(
            name, started - st.start, end - started, (end - started) if st.open else None
        )

    async def think(self, seconds: float) -> None:
        """Pause like a user reading; returns early (raising `StageOver`) when the stage ends."""
        st = self._state
        if st.stopped:
            raise StageOver
        if seconds > 0:
            if seconds >= st.deadline - st.now():
                await st.wait_stop(st.deadline - st.now())
                st.stop("duration")
            else:
                await st.clock.sleep(seconds)
        if st.stopped:
            raise StageOver


class Session(Protocol):
    """One virtual user's session: log in, list, post ... each through ``ops.timed``."""

    async def run(self, ops: Ops) -> None: ...


class SessionFactory(Protocol):
    """Where sessions come from. Opened once per worker process, inside its event loop
    (so a connection pool is made where it is used), and picklable before `open`."""

    async def open(self) -> None: ...

    async def probe(self, timeout_s: float) -> None:
        """One request to the target; raise `LoadTargetUnreachable` if it does not answer."""
        ...

    def session(self, user: int) -> Session: ...

    async def close(self) -> None: ...


def check_open_files(
    plan: Sequence[Stage],
    workers: int = 1,
    *,
    getrlimit: Callable[[int], tuple[int, int]] = resource.getrlimit,
) -> None:
    """Refuse a plan whose peak users per process would exceed the open-files limit.

    Each concurrent user may hold a socket; past the limit connects fail with EMFILE in the
    middle of a stage, which reads like the target failing. Better to refuse up front.
    """
    soft, hard = getrlimit(resource.RLIMIT_NOFILE)
    peak = peak_users(plan)
    per_process = -(-peak // max(1, workers))
    needed = per_process + OPEN_FILES_HEADROOM
    if soft != resource.RLIM_INFINITY and needed > soft:
        hard_text = "unlimited" if hard == resource.RLIM_INFINITY else str(hard)
        raise LoadPlanRefused(
            f"load plan refused: its peak of {peak} concurrent users needs about {needed} open "
            f"files per process ({per_process} users + {OPEN_FILES_HEADROOM} spare) with "
            f"workers={workers}, but the open-files limit (RLIMIT_NOFILE) is {soft} "
            f"(hard limit {hard_text}). Raise it before the run (`ulimit -n {needed}` in the "
            "shell that starts it; above the hard limit, LimitNOFILE= in a systemd unit or "
            "nofile in /etc/security/limits.conf), or spread the users over more workers."
        )


async def _drain(tasks: Sequence[asyncio.Task[Any]], grace_s: float) -> None:
    pending = [task for task in tasks if not task.done()]
    if pending:
        _, still = await asyncio.wait(pending, timeout=grace_s)
        for task in still:
            task.cancel()
        if still:
            await asyncio.gather(*still, return_exceptions=True)


async def _run_session(st: _StageState, session: Session, ops: Ops) -> bool:
    """One session run; False when the stage is over."""
    if st.stopped:
        return False
    st.sessions += 1
    try:
        await session.run(ops)
    except StageOver:
        return False
    except OperationFailed:
        pass  # counted by `timed`; the session's iteration ends there
    except Exception:
        # The scenario's own bug: counted, and against the cap too, so a session that fails
        # before timing anything cannot spin until the deadline uncounted.
        st.requests += 1
        st.recorder.record(SESSION_OP, st.now() - st.start, 0.0, None, OTHER)
        if st.requests >= st.cap:
            st.stop("max_requests")
    return not st.stopped


async def _closed(
    stage: ClosedStage, st: _StageState, factory: SessionFactory, user_base: int
) -> list[asyncio.Task[Any]]:
    async def user(index: int, offset: float) -> None:
        if await st.wait_stop(st.start + offset - st.now()):
            return
        st.active += 1
        st.peak = max(st.peak, st.active)
        try:
            ops = Ops(st, index, None)  # closed model: nothing intended, so one for all runs
            runs = 0
            while await _run_session(st, factory.session(index), ops):
                runs += 1
                if runs % 8 == 0:
                    # A session whose operations never suspend must not starve the loop
                    # (the stage's own deadline, the lag ticker); every run would cost more.
                    await asyncio.sleep(0)
        finally:
            st.active -= 1

    loop = asyncio.get_running_loop()
    tasks = [
        loop.create_task(user(user_base + i, offset))
        for i, offset in enumerate(stage.start_offsets())
    ]
    await st.wait_stop(st.deadline - st.now())
    st.stop("duration")
    return tasks


async def _open(
    stage: OpenStage, st: _StageState, factory: SessionFactory, user_base: int
) -> list[asyncio.Task[Any]]:
    tasks: set[asyncio.Task[Any]] = set()
    loop = asyncio.get_running_loop()

    async def one(index: int, intended: float) -> None:
        try:
            await _run_session(st, factory.session(index), Ops(st, index, intended))
        finally:
            st.active -= 1

    unslept = 0
    for number, intended in enumerate(stage.arrivals(st.start)):
        while not st.stopped and (delay := intended - st.now()) > 0:
            await st.clock.sleep(min(delay, 0.1))
            unslept = 0
        if st.stopped:
            break
        unslept += 1
        if unslept >= 64:  # behind schedule: still let the sessions run
            await asyncio.sleep(0)
            unslept = 0
        st.due += 1
        if st.active >= stage.max_concurrency:
            st.dropped += 1  # the start could not be made on time: counted, never skipped
            continue
        st.active += 1
        st.peak = max(st.peak, st.active)
        task = loop.create_task(one(user_base + number, intended))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await st.wait_stop(st.deadline - st.now())
    st.stop("duration")
    return list(tasks)


async def _progress(
    st: _StageState,
    stage: Stage,
    description: str,
    index: int,
    count: int,
    interval_s: float,
    writer: Writer,
    on_snapshot: Callable[[Snapshot], None] | None,
    live_exclude: tuple[str, ...],
) -> None:
    while True:
        await asyncio.sleep(interval_s)
        completed, errors, p95 = st.recorder.live(exclude=live_exclude)
        snapshot = Snapshot(
            index,
            count,
            description,
            st.active,
            st.now() - st.start,
            stage.duration_s,
            completed,
            errors,
            p95,
            st.dropped,
        )
        writer(snapshot.line(), False)
        if on_snapshot is not None:
            on_snapshot(snapshot)


async def run_stage(
    stage: Stage,
    factory: SessionFactory,
    *,
    index: int = 1,
    count: int = 1,
    settings: EngineSettings = DEFAULT_SETTINGS,
    clock: Clock | None = None,
    writer: Writer = silent,
    cpu_percent: Callable[[], float] | None = None,
    on_snapshot: Callable[[Snapshot], None] | None = None,
    user_base: int = 0,
    description: str | None = None,
) -> StageResult:
    """Run one stage (the factory already open); it stops by itself at its duration or cap."""
    clock = clock or MonotonicClock()
    recorder = StageRecorder(settings.window_s)
    monitor = GeneratorMonitor(
        clock,
        cpu_percent=cpu_percent,
        tick_s=settings.tick_s,
        cpu_limit_percent=settings.cpu_limit_percent,
        lag_p99_limit_s=settings.lag_p99_limit_s,
    )
    st = _StageState(
        clock, recorder, stage.duration_s, stage.max_requests, isinstance(stage, OpenStage)
    )
    # Wall-clock bounds, only for reading the server's view of the stage (its monitoring
    # stamps samples in Unix time); every duration the engine judges is on `clock`.
    started_at = time.time()
    monitor.start()
    ticker = asyncio.get_running_loop().create_task(
        _progress(
            st,
            stage,
            description or stage.describe(),
            index,
            count,
            settings.progress_interval_s,
            writer,
            on_snapshot,
            settings.live_exclude,
        )
    )
    try:
        if isinstance(stage, ClosedStage):
            tasks = await _closed(stage, st, factory, user_base)
        else:
            tasks = await _open(stage, st, factory, user_base)
        await _drain(tasks, settings.grace_s)
    finally:
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
        health = await monitor.stop()
    elapsed = clock.now() - st.start  # drained operations count, so their time does too
    result = StageResult(
        index=index,
        count=count,
        model="closed" if isinstance(stage, ClosedStage) else "open",
        description=description or stage.describe(),
        target=stage.target,
        reached=st.peak if isinstance(stage, ClosedStage) else st.due,
        duration_s=stage.duration_s,
        elapsed_s=elapsed,
        window_s=settings.window_s,
        health=health,
        ops=recorder.finish(),
        requests=st.requests,
        sessions=st.sessions,
        dropped=st.dropped,
        peak_users=st.peak,
        stopped_by="max_requests" if st.stopped_by == "max_requests" else "duration",
        started_at=started_at,
        ended_at=time.time(),
    )
    final = Snapshot(
        index,
        count,
        result.description,
        st.peak,
        result.elapsed_s,
        stage.duration_s,
        result.completed,
        sum(result.errors.values()),
        result.latency().p95_s,
        result.dropped,
    )
    writer(final.line(), True)
    return result


async def probe(factory: SessionFactory, timeout_s: float) -> None:
    """The factory's probe, bounded; any failure to answer becomes `LoadTargetUnreachable`."""
    try:
        await asyncio.wait_for(factory.probe(timeout_s), timeout_s + 1.0)
    except LoadTargetUnreachable:
        raise
    except (TimeoutError, OSError) as exc:
        raise LoadTargetUnreachable(
            f"load target unreachable: the probe got no answer within {timeout_s:g} s "
            f"({type(exc).__name__}: {exc}); no stage was run"
        ) from exc


async def run_plan(
    plan: Sequence[Stage],
    factory: SessionFactory,
    *,
    settings: EngineSettings = DEFAULT_SETTINGS,
    clock: Clock | None = None,
    writer: Writer = silent,
    cpu_percent: Callable[[], float] | None = None,
    on_snapshot: Callable[[Snapshot], None] | None = None,
    worker: tuple[int, int] = (0, 1),
    getrlimit: Callable[[int], tuple[int, int]] = resource.getrlimit,
    start_at: float | None = None,
    barrier: Callable[[], Awaitable[None]] | None = None,
    on_stage: Callable[[StageResult], None] | None = None,
) -> PlanResult:
    """Run every stage of `plan` in order; `worker=(i, n)` runs worker i's share of each.

    The first stage starts at `start_at` on the clock (workers of one machine), or once
    `barrier` returns (workers of several, whose clocks are not comparable). `on_stage`
    gets each stage's result as soon as it is measured, so a worker that dies later still
    delivered the stages before."""
    index, workers = worker
    shares = [stage.share(index, workers) if workers > 1 else stage for stage in plan]
    check_open_files(shares, 1, getrlimit=getrlimit)
    clock = clock or MonotonicClock()
    await factory.open()
    try:
        if settings.probe:
            await probe(factory, settings.probe_timeout_s)
        if start_at is not None:
            await clock.sleep(max(0.0, start_at - clock.now()))
        if barrier is not None:
            await barrier()
        results = []
        for number, (stage, share) in enumerate(zip(plan, shares, strict=True), start=1):
            results.append(
                await run_stage(
                    share,
                    factory,
                    index=number,
                    count=len(plan),
                    settings=settings,
                    clock=clock,
                    writer=writer,
                    cpu_percent=cpu_percent,
                    on_snapshot=on_snapshot,
                    user_base=index * 1_000_000,
                    description=stage.describe(),
                )
            )
            if on_stage is not None:
                on_stage(results[-1])
        return PlanResult(results)
    finally:
        await factory.close()


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop's loop when it is installed (the `fast` extra), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop
    new_loop: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return new_loop


def run(plan: Sequence[Stage], factory: SessionFactory, **kwargs: Any) -> PlanResult:
    """`run_plan` in a new event loop (uvloop when installed), for callers without a loop."""
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        return runner.run(run_plan(plan, factory, **kwargs))
