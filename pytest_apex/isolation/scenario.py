"""The isolation scenario: N users at once, each running the agent while probing the others.

1. N users log in (through the adapter's `make_users`), each gets a canary, creates a
   thread titled with it and opens its socket;
2. everyone meets at a barrier, so all runs start together;
3. each user runs the agent K times in a row (request text carrying the canary), while its
   REST probes run alongside: list its threads, open a few other users' threads by id.

Everything each user saw goes into the ledger. Every step is bounded: the number of runs
and probes, each run's timeout, the setup time and an overall deadline after which what is
still running is cancelled (and said so).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

from hdrh.histogram import HdrHistogram

from pytest_apex.adapters.base import AgentRun, AgentSession
from pytest_apex.isolation.accounting import Ledger
from pytest_apex.isolation.canary import CanaryBook

# n -> n sessions, or the exception that stopped each one that could not log in.
MakeUsers = Callable[[int], Awaitable[Sequence[AgentSession | BaseException]]]
RunAgent = Callable[[AgentSession, str, str, float], Awaitable[AgentRun]]

_HISTOGRAM_MAX_MS: Final = 3_600_000  # one hour: longer than any bounded run


@dataclass(frozen=True)
class ScenarioSpec:
    """How many users do what, and how long anything may take."""

    users: int
    runs_per_user: int = 2
    probes_per_user: int = 3  # other users' threads each user tries to open by id
    run_timeout_s: float = 20.0
    setup_timeout_s: float = 120.0
    deadline_s: float = 300.0

    def __post_init__(self) -> None:
        if self.users < 2:
            raise ValueError(f"isolation needs at least 2 users, got {self.users}")
        if self.runs_per_user < 1 or self.probes_per_user < 0:
            raise ValueError("runs_per_user must be >= 1 and probes_per_user >= 0")


@dataclass
class ScenarioResult:
    """What the scenario measured."""

    spec: ScenarioSpec
    ledger: Ledger
    user_ids: list[str]
    simultaneous: int  # users that passed the barrier together
    wall_seconds: float
    histogram: HdrHistogram
    notes: list[str] = field(default_factory=list)

    @property
    def runs_expected(self) -> int:
        return self.simultaneous * self.spec.runs_per_user

    @property
    def runs_started(self) -> int:
        return self.ledger.total("runs_started")

    @property
    def runs_completed(self) -> int:
        return self.ledger.total("runs_completed")

    def run_seconds_at(self, percentile: float) -> float:
        if self.histogram.get_total_count() == 0:
            return float("nan")
        return float(self.histogram.get_value_at_percentile(percentile)) / 1000.0

    @property
    def p95_s(self) -> float:
        return self.run_seconds_at(95)

    def measurements(self) -> dict[str, float | int]:
        counts = self.ledger.breach_counts()
        lists, access = self.ledger.probes("thread_lists"), self.ledger.probes("thread_access")
        return {
            "users": self.spec.users,
            "simultaneous": self.simultaneous,
            "runs_expected": self.runs_expected,
            "runs_started": self.runs_started,
            "runs_completed": self.runs_completed,
            "events_expected": self.ledger.total("events_expected"),
            "events_received": self.ledger.total("events_received"),
            "foreign_events": self.ledger.total("foreign_events"),
            "breaches_events": counts["events"],
            "breaches_thread_lists": counts["thread_lists"],
            "breaches_thread_access": counts["thread_access"],
            "thread_list_probes_sent": lists.sent,
            "thread_list_probes_answered": lists.answered,
            "thread_access_probes_sent": access.sent,
            "thread_access_probes_answered": access.answered,
            "p50_s": self.run_seconds_at(50),
            "p95_s": self.p95_s,
            "max_s": float(self.histogram.get_max_value()) / 1000.0,
            "wall_s": round(self.wall_seconds, 3),
        }


def _others(index: int, ready: Sequence[int], count: int) -> list[int]:
    """Up to `count` other ready users, the next ones round the ring (deterministic)."""
    position = ready.index(index)
    picked = [ready[(position + step) % len(ready)] for step in range(1, len(ready))]
    return picked[:count]


async def run_isolation_scenario(
    spec: ScenarioSpec, make_users: MakeUsers, run_agent: RunAgent
) -> ScenarioResult:
    started = time.monotonic()
    made = list(await asyncio.wait_for(make_users(spec.users), spec.setup_timeout_s))
    # A user the app failed to sign up or log in is counted, with an example, and the run
    # goes on with the others: one failed sign-up must not lose everybody's verdict.
    sessions = [s for s in made if not isinstance(s, BaseException)]
    failed = [s for s in made if isinstance(s, BaseException)]
    notes: list[str] = []
    if failed:
        example = failed[0]
        notes.append(
            f"{len(failed)} of {len(made)} users could not log in, e.g. "
            f"{type(example).__name__}: {example}"
        )
    book = CanaryBook()
    ledger = Ledger(book)
    for index, session in enumerate(sessions):
        book.issue(index)
        ledger.add_user(index, session.user_id, f"user{index} <{session.email}>")
    thread_of: dict[int, str] = {}

    async def set_up(index: int) -> None:
        session = sessions[index]
        thread = await session.create_thread(
            f"isolation thread of user{index} {book.token_of(index)}"
        )
        thread_of[index] = str(thread["id"])
        ledger.add_thread(index, thread_of[index])
        connect = getattr(session, "connect", None)  # optional: open the socket up front
        if callable(connect):
            await connect()

    outcomes = await asyncio.wait_for(
        asyncio.gather(*(set_up(i) for i in range(len(sessions))), return_exceptions=True),
        spec.setup_timeout_s,
    )
    for index, outcome in enumerate(outcomes):
        if isinstance(outcome, BaseException):
            ledger.record_error(index, f"setup failed: {type(outcome).__name__}: {outcome}")
    ready = [
        i
        for i in range(len(sessions))
        if i in thread_of and not isinstance(outcomes[i], BaseException)
    ]
    barrier = asyncio.Barrier(max(1, len(ready)))
    passed: list[int] = []

    async def runs(index: int) -> None:
        session, canary = sessions[index], book.token_of(index)
        for k in range(spec.runs_per_user):
            text = f"isolation request {k + 1}/{spec.runs_per_user} of user{index} {canary}"
            try:
                run = await run_agent(session, thread_of[index], text, spec.run_timeout_s)
            except Exception as exc:  # the adapter's failure, counted, never fatal to others
                ledger.record_error(index, f"run {k + 1} raised {type(exc).__name__}: {exc}")
                return
            ledger.record_run(index, run)
            if not run.completed:
                return  # the socket's state is unknown now; later runs would prove nothing

    async def probes(index: int) -> None:
        session = sessions[index]
        # Counted as sent before awaiting: a probe cut off by the deadline stays unanswered.
        ledger.probe_sent(index, "thread_lists")
        try:
            threads = await session.list_threads()
        except Exception as exc:
            what = f"listing threads raised {type(exc).__name__}: {exc}"
            ledger.record_probe_failure(index, "thread_lists", what)
        else:
            ledger.record_thread_list(index, threads)
        for other in _others(index, ready, spec.probes_per_user):
            ledger.probe_sent(index, "thread_access")
            try:
                status, body = await session.get_thread(thread_of[other])
            except Exception as exc:
                what = f"reading another user's thread raised {type(exc).__name__}: {exc}"
                ledger.record_probe_failure(index, "thread_access", what)
                continue
            ledger.record_thread_access(index, other, status, body)

    async def user(index: int) -> None:
        await barrier.wait()
        passed.append(index)
        await asyncio.gather(runs(index), probes(index))

    tasks = [asyncio.create_task(user(i)) for i in ready]
    remaining = max(0.0, spec.deadline_s - (time.monotonic() - started))
    _, pending = await asyncio.wait(tasks, timeout=remaining) if tasks else (set(), set())
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)
        notes.append(f"{len(pending)} users still busy at the {spec.deadline_s:g} s deadline")
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            notes.append(f"a user task raised {task.exception()!r}")

    histogram = HdrHistogram(1, _HISTOGRAM_MAX_MS, 3)
    for account in ledger.accounts.values():
        for seconds in account.run_seconds:
            histogram.record_value(min(_HISTOGRAM_MAX_MS, max(1, round(seconds * 1000))))
    return ScenarioResult(
        spec=spec,
        ledger=ledger,
        user_ids=[s.user_id for s in sessions],
        simultaneous=len(passed),
        wall_seconds=time.monotonic() - started,
        histogram=histogram,
        notes=notes,
    )
