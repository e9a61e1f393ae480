"""The streaming isolation scenario: many users at once, every socket read for its whole life.

1. Every user logs in, gets a canary (one per item: their thread, each run's request), creates
   a thread titled with it and opens a socket whose every frame goes to the inbox.
2. Rounds, in which all users act at the same moment: every user starts its run, and once
   every run is accepted (its id known to everybody, for the probes), the round goes on
   with the runs still streaming:
   - round 0 is calm (the baseline); in the later rounds a seeded share of users cancels its
     run mid-stream, reconnects mid-run, sends a request that makes its agent fail, or
     floods a second socket past the rate limit and opens more sockets than the app allows;
   - every user starts a run, lists its threads (every page, at the default page size and at
     1) and reads its own thread while the run streams, then reads the run's status;
   - every user probes other users (a new pairing each round): reads the status of their
     run, cancels it, starts a run on their thread, reads their thread. Each probe must be
     refused; one that is served is a breach, one that gets no answer proves nothing.
3. A burst round pushes the runs in flight past the app's own limit (when it says it has one),
   so the overflow path runs too.
4. A quiet drain window with every socket still open, then the sockets close, and the app's
   gauges of live resources must fall back to their baseline.

Only then is everything scanned (`inbox`), with every identity of every user known. Every
step is bounded (runs, probes, each wait's timeout, an overall deadline); whatever a user's
action raises is counted with an example and the others go on.

The users live in shares (`AgentShare`): one for a run in one process, one per machine for a
run spread over a cluster. A coordinator runs each phase on every share at once and hands
every share what the others published (identities, threads, latest runs) before the next.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import methodcaller
from typing import Any, Final, Literal, Protocol, cast

from hdrh.histogram import HdrHistogram

from pytest_apex.adapters.base import AgentStream, RunSignal, StreamingAgentSession
from pytest_apex.isolation.canary import CanaryBook
from pytest_apex.isolation.cleanup import CleanupResult, ReadGauges, wait_for_rest
from pytest_apex.isolation.identities import Identity, IdentityBook, IdentityKind
from pytest_apex.isolation.inbox import (
    AFTER_RECONNECT,
    BETWEEN,
    DRAIN,
    IN_RUN,
    Inbox,
    Received,
    ScanResult,
)
from pytest_apex.isolation.roles import Adversity, Role, assign, pairings
from pytest_apex.isolation.shares import Shares

MakeUser = Callable[[int], Awaitable[StreamingAgentSession]]
ProbeKind = Literal["run_status", "cancel_run", "start_on_thread", "read_thread"]
PROBE_KINDS: Final[tuple[ProbeKind, ...]] = (
    "run_status",
    "cancel_run",
    "start_on_thread",
    "read_thread",
)
ProbeOutcome = Literal["refused", "served", "unanswered"]
_HISTOGRAM_MAX_MS: Final = 3_600_000
BURST_ROUND: Final = -1
# Two threads each, so that every list has a second page at page size 1 (a page keyed
# without its user shows only there) and runs alternate between threads.
THREADS_PER_USER: Final = 2
# Where the app states no limit: past common defaults (3 sockets a user, 100 messages a minute).
DEFAULT_SOCKET_CAP: Final = 3
DEFAULT_MESSAGES_PER_MINUTE: Final = 100


@dataclass(frozen=True)
class AgentScenarioSpec:
    """How many users do what, and how long anything may take."""

    users: int
    rounds: int = 3  # round 0 calm, the others with adversity
    seed: int = 0
    adversity: Adversity = field(default_factory=Adversity)
    probes_per_round: int = 2  # other users each user probes per round
    # The app's own limits, where its description or configuration reveals them (0: unknown).
    runs_in_flight_limit: int = 0
    sockets_per_user_limit: int = 0
    rate_limit_per_minute: int = 0
    burst: bool = True
    run_timeout_s: float = 30.0
    setup_timeout_s: float = 120.0
    drain_s: float = 3.0
    cleanup_timeout_s: float = 30.0
    deadline_s: float = 300.0

    def __post_init__(self) -> None:
        if self.users < 2:
            raise ValueError(f"isolation needs at least 2 users, got {self.users}")
        if self.rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {self.rounds}")

    @property
    def burst_runs_per_user(self) -> int:
        """Runs each user starts at once in the burst round: past the app's limit in sum."""
        if not self.burst:
            return 0
        if self.runs_in_flight_limit <= 0:
            return 2
        target = self.runs_in_flight_limit + max(10, self.runs_in_flight_limit // 5)
        return max(2, math.ceil(target / self.users))


@dataclass
class RunRecord:
    """One run a user asked for, as the user saw it."""

    user: int
    round: int
    role: Role
    key: str
    canary: str
    sent_at: float
    run_id: str = ""
    outcome: str = ""  # completed | failed | cancelled | refused | timeout | error
    own_events: int = 0
    first_event_at: float | None = None
    ended_at: float | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def done(self) -> bool:
        return bool(self.outcome)

    @property
    def seconds(self) -> float:
        return math.nan if self.ended_at is None else self.ended_at - self.sent_at


@dataclass
class ProbeRecord:
    viewer: int
    owner: int
    kind: ProbeKind
    outcome: ProbeOutcome = "unanswered"
    detail: str = ""
    answered: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class _Socket:
    number: int
    stream: AgentStream | None = None
    reconnected: bool = False


@dataclass
class _User:
    index: int
    session: StreamingAgentSession
    canary: str
    thread_ids: list[str] = field(default_factory=list)
    round_no: int = 0  # the round the user is in: its runs alternate between its threads
    sockets: list[_Socket] = field(default_factory=list)
    main: _Socket | None = None
    requests: dict[str, RunRecord | ProbeRecord] = field(default_factory=dict)
    runs: dict[str, RunRecord] = field(default_factory=dict)  # run id -> record
    records: list[RunRecord] = field(default_factory=list)
    probed_values: set[str] = field(default_factory=set)  # others' ids this user sent

    @property
    def thread_id(self) -> str:
        """The thread of the current round (a second page needs a second thread)."""
        return self.thread_ids[self.round_no % len(self.thread_ids)] if self.thread_ids else ""

    def open_runs(self) -> bool:
        return any(not r.done for r in self.records)

    def latest_run_id(self) -> str:
        return next((r.run_id for r in reversed(self.records) if r.run_id), "")


@dataclass(frozen=True)
class Peer:
    """What the other users of the run know of one user: its threads and its latest run."""

    index: int
    thread_ids: tuple[str, ...]
    run_id: str = ""

    def thread_in(self, round_no: int) -> str:
        """The thread the user runs on in round `round_no` (as `_User.thread_id`)."""
        return self.thread_ids[round_no % len(self.thread_ids)] if self.thread_ids else ""


@dataclass(frozen=True)
class AgentPublished:
    """What a share tells the others after a phase: the identities it issued since its last
    phase, what others need to probe its users (`Peer`), and how many of them are ready."""

    identities: tuple[Identity, ...] = ()
    peers: tuple[Peer, ...] = ()
    users_ready: int = 0


@dataclass
class AgentScenarioResult:
    """What the scenario measured; `scan` holds every leak."""

    spec: AgentScenarioSpec
    labels: dict[int, str] = field(default_factory=dict)
    user_ids: dict[int, str] = field(default_factory=dict)  # user index -> the app's user id
    simultaneous: int = 0
    runs: list[RunRecord] = field(default_factory=list)
    probes: list[ProbeRecord] = field(default_factory=list)
    scan: ScanResult = field(default_factory=ScanResult)
    own_controls: Counter[str] = field(default_factory=Counter)  # "<control> sent|ok" counts
    errors: Counter[str] = field(default_factory=Counter)
    error_examples: dict[str, str] = field(default_factory=dict)
    sockets_opened: int = 0
    sockets_refused: int = 0
    peak_runs_in_flight: int = 0
    cleanup: CleanupResult | None = None
    wall_seconds: float = 0.0
    # Seconds spent in each phase (sign-up, setup, rounds, drain, cleanup, scan): where a
    # long run's time went.
    phases: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    inbox: Inbox = field(default_factory=Inbox)
    # Shares of the users whose process was lost mid-run (a Ray actor that died), each
    # naming where it ran: whatever its users would have seen is unknown.
    lost: list[str] = field(default_factory=list)

    def phase_done(self, name: str, since: float) -> float:
        """Record `name` as lasting from `since` (a monotonic time) until now; now."""
        now = time.monotonic()
        self.phases[name] = round(now - since, 1)
        return now

    def error(self, kind: str, example: str) -> None:
        self.errors[kind] += 1
        self.error_examples.setdefault(kind, example[:300])

    def describe_errors(self, limit: int = 3) -> str:
        return "; ".join(
            f"{count} × {kind} (e.g. {self.error_examples[kind]})"
            for kind, count in self.errors.most_common(limit)
        )

    def runs_of(self, roles: frozenset[str], *, burst: bool | None = None) -> list[RunRecord]:
        return [
            r
            for r in self.runs
            if r.role in roles and (burst is None or (r.round == BURST_ROUND) == burst)
        ]

    def histogram(self, runs: Sequence[RunRecord]) -> HdrHistogram:
        histogram = HdrHistogram(1, _HISTOGRAM_MAX_MS, 3)
        for run in runs:
            if run.outcome == "completed" and not math.isnan(run.seconds):
                histogram.record_value(min(_HISTOGRAM_MAX_MS, max(1, round(run.seconds * 1000))))
        return histogram

    def probe_counts(self) -> Counter[str]:
        return Counter(p.outcome for p in self.probes)

    def served_probes(self) -> list[ProbeRecord]:
        return [p for p in self.probes if p.outcome == "served"]

    def foreign_cancellations(self) -> list[RunRecord]:
        """Runs that ended cancelled although their own user never cancelled them."""
        return [r for r in self.runs if r.outcome == "cancelled" and r.role != "cancel"]


class AgentShare:
    """The users `indices` of a run, driven phase by phase: `sign_up`, `setup`, then per
    round `start_round` and `finish_round`, `burst`, `drain`, `close`, `outcome`. Each phase
    returns what the other shares must learn (`learn`) before the next one.

    One share holds every user of a local run; a run spread over machines has one share per
    machine. Times are this share's own monotonic clock: nothing compares two shares' clocks.
    """

    def __init__(
        self, spec: AgentScenarioSpec, indices: Sequence[int], make_user: MakeUser, share: int = 0
    ) -> None:
        self.spec = spec
        self.indices = tuple(indices)
        self.make_user = make_user
        self.result = AgentScenarioResult(spec)
        self.canaries = CanaryBook()
        self.identities = IdentityBook()
        self.sessions: list[tuple[int, StreamingAgentSession]] = []
        self.users: list[_User] = []
        self.peers: dict[int, Peer] = {}
        self.round_runs: dict[int, RunRecord | None] = {}  # user -> this round's run
        # Mid-stream moments (which event a canceller cancels after): seeded per share.
        self.rng = random.Random(hash((spec.seed, share)))
        self.started = time.monotonic()
        self.draining = False
        self.in_flight = 0
        self._unpublished: list[Identity] = []

    def now(self) -> float:
        return time.monotonic() - self.started

    def _own(self, owner: int, value: object, kind: IdentityKind, label: str = "") -> None:
        self.identities.add(owner, value, kind, label)
        self._unpublished.append((owner, str(value), kind, label))

    def _publish(self, peers: Sequence[Peer] = (), ready: int = 0) -> AgentPublished:
        identities, self._unpublished = tuple(self._unpublished), []
        return AgentPublished(identities, tuple(peers), ready)

    def _peers(self) -> list[Peer]:
        return [Peer(u.index, tuple(u.thread_ids), u.latest_run_id()) for u in self.users]

    # --- the phases ---------------------------------------------------------------------

    async def sign_up(self) -> AgentPublished:
        """Every user of the share signs up and logs in at once; one that fails is counted."""
        made = await asyncio.gather(
            *(self.make_user(i) for i in self.indices), return_exceptions=True
        )
        for index, session in zip(self.indices, made, strict=True):
            if isinstance(session, BaseException):
                self.result.error("sign-up or login failed", f"user {index}: {_said(session)}")
            else:
                self.sessions.append((index, session))
                self.result.labels[index] = f"user{index} <{session.email}>"
        return self._publish()

    async def setup(self) -> AgentPublished:
        prepared = await asyncio.gather(*(self.setup_user(i, s) for i, s in self.sessions))
        self.users = [u for u in prepared if u is not None]
        self.result.user_ids = {u.index: u.session.user_id for u in self.users}
        self.result.simultaneous = len(self.users)
        return self._publish(self._peers(), len(self.users))

    async def learn(self, published: Sequence[AgentPublished]) -> None:
        """What every share published in the phase just ended (this one's too)."""
        for part in published:
            self.identities.add_all(part.identities)
            self.peers.update((peer.index, peer) for peer in part.peers)

    async def start_round(self, round_no: int, roles: Mapping[int, Role]) -> AgentPublished:
        """Every user starts its run of the round at the same moment; returns once each run
        is accepted (its id known, for the others' probes), refused or out of time."""
        started = await asyncio.gather(
            *(self.start_user_round(u, round_no, roles[u.index]) for u in self.users)
        )
        self.round_runs = {
            user.index: record
            for user, record in zip(self.users, started, strict=True)
            if record is not _SITS_OUT
        }
        return self._publish(self._peers())

    async def finish_round(
        self, round_no: int, roles: Mapping[int, Role], partners: Mapping[int, Sequence[int]]
    ) -> AgentPublished:
        """The rest of the round, its runs still streaming: REST and adversity during the
        run, its end, its status, then probes of this round's partners, wherever they run."""
        await asyncio.gather(
            *(
                self.finish_user_round(u, roles[u.index], partners.get(u.index, ()))
                for u in self.users
                if u.index in self.round_runs
            )
        )
        return self._publish()

    async def burst(self, runs: int) -> AgentPublished:
        await asyncio.gather(*(self.burst_user(u, runs) for u in self.users))
        return self._publish()

    async def drain(self) -> None:
        """From now on, whatever arrives arrives outside every run."""
        self.draining = True

    async def close(self) -> AgentPublished:
        """Every socket closes; returns the identities issued since the last phase (a run
        accepted during the drain), so that every share knows them before it scans."""
        for user in self.users:
            for socket in user.sockets:
                if socket.stream is not None and _open(socket):
                    try:
                        await socket.stream.close()
                    except Exception as exc:
                        self.result.error(
                            "closing a socket raised", f"user {user.index}: {_said(exc)}"
                        )
        return self._publish()

    async def outcome(self) -> AgentScenarioResult:
        """Everything the share's users received, scanned against every identity of the run
        (each share has learnt all of them by now)."""
        # Ids a user probed, quoted back to it on its socket, are echoes, not leaks.
        probed = {user.index: tuple(user.probed_values) for user in self.users}
        for received in self.result.inbox.items:
            if received.channel == "socket":
                received.echoed = probed.get(received.viewer, ())
        self.result.scan = self.result.inbox.scan(self.identities)
        self.result.wall_seconds = self.now()
        return self.result

    # --- what a socket receives ---------------------------------------------------------

    def sink(self, user: _User, socket: _Socket) -> Callable[[str], None]:
        frames = 0

        def on_frame(text: str) -> None:
            nonlocal frames
            frames += 1
            try:
                frame: Any = json.loads(text)
            except ValueError:
                frame = None
            kind = str(frame.get("type", "?")) if isinstance(frame, dict) else "non-JSON"
            if self.draining:
                phase = DRAIN
            elif user.open_runs():
                phase = IN_RUN
            elif socket.reconnected:
                phase = AFTER_RECONNECT
            else:
                phase = BETWEEN
            self.result.inbox.add(
                Received(
                    user.index,
                    "socket",
                    self.now(),
                    text,
                    f"socket {socket.number}, frame {frames}",
                    kind,
                    phase,
                )
            )
            signal = user.session.run_signal(frame) if frame is not None else None
            if signal is not None:
                self._signal(user, signal)

        return on_frame

    def _signal(self, user: _User, signal: RunSignal) -> None:
        request = user.requests.get(signal.request_key) if signal.request_key else None
        if isinstance(request, ProbeRecord):
            if signal.accepted:
                request.outcome, request.detail = "served", "the app accepted it"
            elif signal.refused:
                request.outcome = "refused"
            request.answered.set()
            return
        if isinstance(request, RunRecord):
            if signal.accepted and signal.run_id:
                request.run_id = signal.run_id
                user.runs[signal.run_id] = request
                self._own(user.index, signal.run_id, "run_id", f"run {request.round}")
            elif signal.refused:
                request.outcome, request.ended_at = "refused", self.now()
                self.in_flight -= 1
            request.changed.set()
            return
        record = user.runs.get(signal.run_id)
        if record is None or record.done:
            return
        record.own_events += 1
        if record.first_event_at is None:
            record.first_event_at = self.now()
        if signal.terminal:
            record.outcome, record.ended_at = signal.terminal, self.now()
            self.in_flight -= 1
        record.changed.set()

    # --- sockets ------------------------------------------------------------------------

    async def open_socket(self, user: _User, *, reconnected: bool = False) -> _Socket:
        socket = _Socket(len(user.sockets) + 1, reconnected=reconnected)
        user.sockets.append(socket)
        socket.stream = await user.session.open_stream(self.sink(user, socket))
        self.result.sockets_opened += 1
        return socket

    async def ensure_main(self, user: _User) -> _Socket:
        main = user.main
        if main is None or main.stream is None or main.stream.closed_reason:
            if main is not None and main.stream is not None:
                self.result.error(
                    "a socket ended on its own",
                    f"{self.result.labels[user.index]}: {main.stream.closed_reason}",
                )
            user.main = await self.open_socket(user, reconnected=main is not None)
        return cast(_Socket, user.main)  # either still open or just opened: never None here

    # --- setup --------------------------------------------------------------------------

    async def setup_user(self, index: int, session: StreamingAgentSession) -> _User | None:
        user = _User(index, session, self.canaries.issue(index))
        self._own(index, user.canary, "canary", "the user")
        self._own(index, session.user_id, "user_id")
        self._own(index, session.username, "username")
        self._own(index, session.email, "username")
        try:
            for number in range(THREADS_PER_USER):
                label = f"thread {number + 1}"
                title = self.canaries.item(index, label)
                self._own(index, title, "canary", label)
                thread = await session.create_thread(f"{title} isolation {label} of user {index}")
                user.thread_ids.append(str(thread["id"]))
                self._own(index, user.thread_ids[-1], "item_id", label)
            await self.ensure_main(user)
        except Exception as exc:
            self.result.error("setup failed", f"{self.result.labels[index]}: {_said(exc)}")
            return None
        return user

    # --- runs ---------------------------------------------------------------------------

    async def start_run(
        self, user: _User, socket: _Socket, round_no: int, role: Role
    ) -> RunRecord | None:
        canary = self.canaries.item(user.index, f"run {round_no} request")
        self._own(user.index, canary, "canary", f"run {round_no} request")
        text = f"{canary} isolation run {round_no} of user {user.index}"
        if role == "fail":
            text = user.session.failing_request(text) or text
        assert socket.stream is not None
        record = RunRecord(user.index, round_no, role, "", canary, self.now())
        try:
            key = await socket.stream.start_run(user.thread_id, text)
        except Exception as exc:
            self.result.error("starting a run raised", f"{self.label(user)}: {_said(exc)}")
            return None
        record.key = key
        user.requests[key] = record
        user.records.append(record)
        self.result.runs.append(record)
        self.in_flight += 1
        self.result.peak_runs_in_flight = max(self.result.peak_runs_in_flight, self.in_flight)
        return record

    async def until(self, record: RunRecord, condition: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not condition():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            record.changed.clear()
            try:
                await asyncio.wait_for(record.changed.wait(), remaining)
            except TimeoutError:
                return condition()
        return True

    async def finish(self, record: RunRecord) -> None:
        if not await self.until(record, lambda: record.done, self.spec.run_timeout_s):
            record.outcome, record.ended_at = "timeout", None
            self.in_flight -= 1

    async def adversity(self, user: _User, record: RunRecord, role: Role) -> None:
        timeout = self.spec.run_timeout_s
        if role == "cancel":
            # After the 2nd or 3rd event: mid-stream, where half-done work is in flight.
            events = self.rng.choice((2, 3))
            await self.until(record, lambda: record.own_events >= events or record.done, timeout)
            if record.done or not record.run_id or user.main is None or user.main.stream is None:
                return
            await user.main.stream.cancel_run(record.run_id)
        elif role == "reconnect":
            await self.until(record, lambda: record.own_events >= 1 or record.done, timeout)
            old = user.main
            # The new connection first, then the old one drops without a closing handshake,
            # as when a client switches networks: the rest of the run must follow the user.
            user.main = await self.open_socket(user, reconnected=True)
            if old is not None and old.stream is not None:
                await old.stream.close(abrupt=True)
        elif role == "rate_limit":
            await self.flood(user)

    async def flood(self, user: _User) -> None:
        """Past the rate limit on a second socket, then past the app's socket cap."""
        extra = await self.open_socket(user)
        assert extra.stream is not None
        await extra.stream.chatter(
            (self.spec.rate_limit_per_minute or DEFAULT_MESSAGES_PER_MINUTE) + 10
        )
        extras = [extra]
        cap = self.spec.sockets_per_user_limit or DEFAULT_SOCKET_CAP
        while sum(_open(s) for s in user.sockets) <= cap and len(extras) <= cap:
            extras.append(await self.open_socket(user))
        # The socket past the cap must be closed by the app: wait for it, bounded.
        last = extras[-1].stream
        assert last is not None
        if await last.wait_closed(5.0):
            self.result.sockets_refused += 1
        for socket in extras:
            if socket.stream is not None and _open(socket):
                await socket.stream.close()

    # --- REST ---------------------------------------------------------------------------

    def keep(self, user: _User, answers: Sequence[Any], kind: str) -> None:
        for answer in answers:
            self.result.inbox.add(
                Received(
                    user.index,
                    "rest",
                    self.now(),
                    answer.text,
                    f"{answer.method} {_path(answer.url)} [{answer.status}]",
                    kind,
                    "",  # REST answers have no phase: they answer the user's own request
                    echoed=(answer.url,),
                )
            )

    def expect(self, name: str) -> None:
        """One more positive control `name`, counted before it runs: a step that raises
        leaves it sent and not ok, never unseen."""
        self.result.own_controls[f"{name} sent"] += 1

    def passed(self, name: str, ok: bool) -> None:
        self.result.own_controls[f"{name} ok"] += int(ok)

    async def rest_during_run(self, user: _User) -> None:
        session: Any = user.session
        earlier = [r for r in user.records if r.run_id and r.done][-2:]
        for _ in (None, 1):
            self.expect("own_thread_listed")
        self.expect("own_thread_read")
        for _ in earlier:
            self.expect("own_run_status_read")
        for size in (None, 1):
            pages = await session.list_thread_pages(size)
            self.keep(user, pages, "list threads")
            self.passed(
                "own_thread_listed",
                bool(pages)
                and all(p.ok for p in pages)
                and all(any(t in p.text for p in pages) for t in user.thread_ids),
            )
        answers = await session.read_thread(user.thread_id)
        self.keep(user, answers, "read own thread")
        self.passed("own_thread_read", bool(answers) and all(a.ok for a in answers))
        # Earlier runs' status again, after everybody else's runs since: a cache keyed
        # wrongly answers a repeated read with someone else's entry.
        for record in earlier:
            answer = await user.session.run_status(record.run_id)
            self.keep(user, [answer], "run status again")
            self.passed("own_run_status_read", answer.ok and record.run_id in answer.text)

    async def rest_after_run(self, user: _User, record: RunRecord) -> None:
        if not record.run_id:
            return
        self.expect("own_run_status_read")
        answer = await user.session.run_status(record.run_id)
        self.keep(user, [answer], "run status")
        self.passed("own_run_status_read", answer.ok and record.run_id in answer.text)

    # --- probes -------------------------------------------------------------------------

    async def probe(self, user: _User, other: Peer) -> None:
        run_id = other.run_id
        if run_id:
            user.probed_values.add(run_id)
            probe = self.new_probe(user, other, "run_status")
            answer = await user.session.run_status(run_id)
            self.keep(user, [answer], "probe run status")
            self.judge_answer(probe, answer)
            if user.main is not None and user.main.stream is not None:
                probe = self.new_probe(user, other, "cancel_run")
                await self.socket_probe(user, probe, user.main.stream.cancel_run(run_id))
        user.probed_values.update(other.thread_ids)
        if user.main is not None and user.main.stream is not None:
            probe = self.new_probe(user, other, "start_on_thread")
            text = f"{self.canaries.item(user.index, 'probe request')} probe of another thread"
            thread = other.thread_in(user.round_no)
            await self.socket_probe(user, probe, user.main.stream.start_run(thread, text))
        probe = self.new_probe(user, other, "read_thread")
        answers = await user.session.read_thread(other.thread_in(user.round_no))
        self.keep(user, answers, "probe read thread")
        self.judge_answer(probe, answers[0] if answers else None)

    def new_probe(self, user: _User, other: Peer, kind: ProbeKind) -> ProbeRecord:
        probe = ProbeRecord(user.index, other.index, kind)
        self.result.probes.append(probe)
        return probe

    def judge_answer(self, probe: ProbeRecord, answer: Any) -> None:
        if answer is None:
            return
        if answer.refused:
            probe.outcome = "refused"
        elif answer.ok:
            probe.outcome = "served"
            probe.detail = f"{answer.method} {_path(answer.url)} answered {answer.status}"
        else:
            probe.detail = f"{answer.method} {_path(answer.url)} answered {answer.status}"

    async def socket_probe(self, user: _User, probe: ProbeRecord, send: Awaitable[str]) -> None:
        key = await send
        user.requests[key] = probe
        try:
            await asyncio.wait_for(probe.answered.wait(), self.spec.run_timeout_s)
        except TimeoutError:
            probe.detail = "no answer on the socket"

    # --- rounds -------------------------------------------------------------------------

    def label(self, user: _User) -> str:
        return self.result.labels.get(user.index, f"user {user.index}")

    async def guarded(self, user: _User, doing: str, step: Awaitable[Any]) -> None:
        try:
            await step
        except Exception as exc:
            self.result.error(f"{doing} raised", f"{self.label(user)}: {_said(exc)}")

    async def start_user_round(self, user: _User, round_no: int, role: Role) -> Any:
        """The user's run of the round (None: it could not start one), or `_SITS_OUT` when
        the user cannot take part in the round at all (its socket could not be reopened)."""
        user.round_no = round_no
        try:
            main = await self.ensure_main(user)
        except Exception as exc:
            self.result.error("reopening a socket raised", f"{self.label(user)}: {_said(exc)}")
            return _SITS_OUT
        record = await self.start_run(user, main, round_no, role)
        if record is not None:
            timeout = self.spec.run_timeout_s
            await self.until(record, lambda: bool(record.run_id) or record.done, timeout)
        return record

    async def finish_user_round(self, user: _User, role: Role, partners: Sequence[int]) -> None:
        record = self.round_runs[user.index]
        steps: list[Awaitable[Any]] = [
            self.guarded(user, "REST during a run", self.rest_during_run(user))
        ]
        if record is not None:
            steps.append(
                self.guarded(user, f"{role} during a run", self.adversity(user, record, role))
            )
        await asyncio.gather(*steps)
        if record is not None:
            await self.finish(record)
            await self.guarded(user, "reading the run status", self.rest_after_run(user, record))
        for index in partners:
            other = self.peers.get(index)
            if other is not None:
                await self.guarded(user, "probing another user", self.probe(user, other))

    async def burst_user(self, user: _User, runs: int) -> None:
        try:
            main = await self.ensure_main(user)
        except Exception as exc:
            self.result.error("reopening a socket raised", f"{self.label(user)}: {_said(exc)}")
            return
        records = [await self.start_run(user, main, BURST_ROUND, "calm") for _ in range(runs)]
        await asyncio.gather(*(self.finish(r) for r in records if r is not None))


_SITS_OUT: Final = object()


class AgentShareHandle(Protocol):
    """A share as the coordinator drives it: an `AgentShare` here, or one on another
    machine (`pytest_apex.executors.ray_isolation`). Each call may raise `ShareLost`."""

    async def sign_up(self) -> AgentPublished: ...

    async def setup(self) -> AgentPublished: ...

    async def learn(self, published: Sequence[AgentPublished]) -> None: ...

    async def start_round(self, round_no: int, roles: Mapping[int, Role]) -> AgentPublished: ...

    async def finish_round(
        self, round_no: int, roles: Mapping[int, Role], partners: Mapping[int, Sequence[int]]
    ) -> AgentPublished: ...

    async def burst(self, runs: int) -> AgentPublished: ...

    async def drain(self) -> None: ...

    async def close(self) -> AgentPublished: ...

    async def outcome(self) -> AgentScenarioResult: ...


class _Coordinator:
    """Runs each phase on every share at once and hands its news to all of them."""

    def __init__(self, spec: AgentScenarioSpec, shares: Sequence[AgentShareHandle]) -> None:
        self.spec = spec
        self.shares = Shares(shares)
        self.peers: dict[int, Peer] = {}
        self.rng = random.Random(spec.seed)  # who does what, and who probes whom

    async def phase(self, call: Callable[[AgentShareHandle], Awaitable[AgentPublished]]) -> int:
        published: list[AgentPublished] = await self.shares.each(call)
        for part in published:
            self.peers.update((peer.index, peer) for peer in part.peers)
        await self.shares.each(lambda share: share.learn(published))
        return sum(p.users_ready for p in published)

    async def rounds(self) -> None:
        indices = sorted(self.peers)
        roles: dict[int, Role] = {}
        for round_no in range(self.spec.rounds):
            adversity = self.spec.adversity if round_no else None
            roles = assign(indices, adversity, self.rng, previous=roles)
            partners = pairings(indices, self.spec.probes_per_round, self.rng)
            await self.phase(methodcaller("start_round", round_no, roles))
            await self.phase(methodcaller("finish_round", round_no, roles, partners))
        runs = self.spec.burst_runs_per_user
        if runs:
            await self.phase(lambda share: share.burst(runs))


def merge_agent_results(
    spec: AgentScenarioSpec, parts: Sequence[AgentScenarioResult]
) -> AgentScenarioResult:
    """One result of every share's: runs, probes, leaks and received items joined, counts
    summed (the peak of runs in flight is the sum of each share's own peak)."""
    merged = AgentScenarioResult(spec)
    for part in parts:
        merged.labels.update(part.labels)
        merged.user_ids.update(part.user_ids)
        merged.simultaneous += part.simultaneous
        merged.runs.extend(part.runs)
        merged.probes.extend(part.probes)
        merged.scan.leaks.extend(part.scan.leaks)
        merged.scan.checked.update(part.scan.checked)
        merged.scan.kinds.update(part.scan.kinds)
        merged.scan.phases.update(part.scan.phases)
        merged.scan.outside_frames += part.scan.outside_frames
        merged.own_controls.update(part.own_controls)
        merged.errors.update(part.errors)
        for kind, example in part.error_examples.items():
            merged.error_examples.setdefault(kind, example)
        merged.sockets_opened += part.sockets_opened
        merged.sockets_refused += part.sockets_refused
        merged.peak_runs_in_flight += part.peak_runs_in_flight
        merged.notes.extend(n for n in part.notes if n not in merged.notes)
        merged.inbox.items.extend(part.inbox.items)
    return merged


async def run_agent_shares(
    spec: AgentScenarioSpec,
    shares: Sequence[AgentShareHandle],
    read_gauges: ReadGauges | None = None,
) -> AgentScenarioResult:
    """The scenario over `shares` (together holding users 0 … spec.users - 1); `read_gauges`
    reads the app's live-resource gauges (cleanup), here, once for the whole run."""
    coordinator = _Coordinator(spec, shares)
    notes: list[str] = []
    phases: dict[str, float] = {}
    started = time.monotonic()

    def done(name: str, since: float) -> float:
        now = time.monotonic()
        phases[name] = round(now - since, 1)
        return now

    baseline: Mapping[str, float] | None = None
    if read_gauges is not None:
        try:
            baseline = dict(await read_gauges())
        except Exception as exc:
            notes.append(f"the gauges at rest could not be read: {_said(exc)}")
    mark = time.monotonic()
    try:
        await asyncio.wait_for(coordinator.phase(lambda s: s.sign_up()), spec.setup_timeout_s)
        mark = done("sign_up", mark)
        ready = await asyncio.wait_for(coordinator.phase(lambda s: s.setup()), spec.setup_timeout_s)
        mark = done("setup", mark)
        remaining = spec.deadline_s - (time.monotonic() - started)
        if ready >= 2:
            await asyncio.wait_for(coordinator.rounds(), max(1.0, remaining))
    except TimeoutError:
        notes.append(f"the deadline of {spec.deadline_s:g} s passed; the rest was cancelled")
    mark = done("rounds", mark)
    # The quiet drain window: every socket still open, nothing asked; whatever arrives now
    # arrives outside every run.
    await coordinator.shares.each(lambda s: s.drain())
    await asyncio.sleep(spec.drain_s)  # the drain window is a duration by definition
    await coordinator.phase(lambda s: s.close())
    mark = done("drain", mark)
    cleanup = None
    if read_gauges is not None and baseline is not None:
        cleanup = await wait_for_rest(read_gauges, baseline, spec.cleanup_timeout_s)
    mark = done("cleanup", mark)
    parts: list[AgentScenarioResult] = await coordinator.shares.each(lambda s: s.outcome())
    result = merge_agent_results(spec, parts)
    done("scan", mark)
    result.cleanup = cleanup
    result.notes = notes + result.notes
    result.lost = list(coordinator.shares.lost)
    result.phases = phases
    result.wall_seconds = time.monotonic() - started
    return result


async def run_agent_isolation(
    spec: AgentScenarioSpec,
    make_user: MakeUser,
    read_gauges: ReadGauges | None = None,
) -> AgentScenarioResult:
    """Run the scenario with every user in this process."""
    share = AgentShare(spec, range(spec.users), make_user)
    return await run_agent_shares(spec, [share], read_gauges)


def _open(socket: _Socket) -> bool:
    return socket.stream is not None and not socket.stream.closed_reason


def _path(url: str) -> str:
    return "/" + url.split("://", 1)[-1].split("/", 1)[-1] if "://" in url else url


def _said(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]
