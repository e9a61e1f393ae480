"""Per-user accounting of an isolation run: what each user started, got and should not have.

The ledger is fed what each user saw (agent runs, thread lists, direct thread reads) and
turns it into counts and breaches. A breach is one payload a user received that belongs to
someone else: an event of another user's run, another user's thread in their list, another
user's thread opened by id. Breaches name the viewer and, where it can be told, the owner.

Every probe is also tallied as sent and answered: an answer is a response that says something
about isolation (a thread list; a refusal or the thread itself). A 5xx, an exception or no
response before the deadline is not one, so "0 breaches" is only worth as much as the share
of probes answered (the positive control).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, Protocol

from pytest_apex.isolation.canary import CanaryBook, Sighting
from pytest_apex.isolation.canary import text_of as _text

BreachKind = Literal["events", "thread_lists", "thread_access"]
BREACH_KINDS: Final[tuple[BreachKind, ...]] = ("events", "thread_lists", "thread_access")
# The REST probes: listing one's own threads, opening another user's thread by id.
ProbeKind = Literal["thread_lists", "thread_access"]
PROBE_KINDS: Final[tuple[ProbeKind, ...]] = ("thread_lists", "thread_access")

# agent_started, agent_thinking, tool_executing, tool_completed, agent_completed.
EVENTS_PER_RUN: Final = 5
# Statuses that refuse another user's thread without saying whether it exists.
REFUSED_STATUSES: Final = frozenset({403, 404})


class RunView(Protocol):
    """What the ledger needs of an agent run (`pytest_apex.adapters.base.AgentRun` fits)."""

    run_id: str
    events: list[dict[str, Any]]
    foreign: list[dict[str, Any]]
    seconds: float

    @property
    def completed(self) -> bool: ...


@dataclass(frozen=True)
class Breach:
    """One thing user `viewer` received that belongs to user `owner` (None: unknown owner)."""

    kind: BreachKind
    viewer: int
    owner: int | None
    detail: str = ""

    def describe(self, label: Mapping[int, str] | None = None) -> str:
        def name(index: int | None) -> str:
            if index is None:
                return "a user outside this run"
            return (label or {}).get(index, f"user {index}")

        text = f"{name(self.viewer)} saw data of {name(self.owner)}"
        return f"{text} ({self.detail})" if self.detail else text


@dataclass
class ProbeTally:
    """Probes of one kind: how many were sent, how many answered, what came back instead."""

    sent: int = 0
    answered: int = 0
    unanswered: list[str] = field(default_factory=list)  # e.g. "GET ... answered 500"

    @property
    def silent(self) -> int:
        """Probes that got neither an answer nor an error: still running at the deadline."""
        return max(0, self.sent - self.answered - len(self.unanswered))


@dataclass
class UserAccount:
    """One user's ledger."""

    index: int
    user_id: str
    label: str
    runs_started: int = 0
    runs_completed: int = 0
    events_received: int = 0  # events of the user's own runs
    foreign_events: int = 0  # events of other runs that reached this user's socket
    probes: dict[ProbeKind, ProbeTally] = field(
        default_factory=lambda: {kind: ProbeTally() for kind in PROBE_KINDS}
    )
    run_seconds: list[float] = field(default_factory=list)
    breaches: list[Breach] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def events_expected(self) -> int:
        return self.runs_started * EVENTS_PER_RUN

    @property
    def probes_sent(self) -> int:
        return sum(t.sent for t in self.probes.values())

    @property
    def probes_answered(self) -> int:
        return sum(t.answered for t in self.probes.values())


class Ledger:
    """The accounts of every user of one run, indexed 0..n-1."""

    def __init__(self, book: CanaryBook) -> None:
        self.book = book
        self.accounts: dict[int, UserAccount] = {}
        self._index_of_user_id: dict[str, int] = {}
        self._owner_of_thread: dict[str, int] = {}

    # --- who is who ---------------------------------------------------------------------

    def add_user(self, index: int, user_id: str, label: str) -> UserAccount:
        account = UserAccount(index, user_id, label)
        self.accounts[index] = account
        self._index_of_user_id[user_id] = index
        return account

    def add_thread(self, owner: int, thread_id: str) -> None:
        self._owner_of_thread[thread_id] = owner

    def owner_of_user_id(self, user_id: object) -> int | None:
        return self._index_of_user_id.get(str(user_id)) if user_id is not None else None

    @property
    def labels(self) -> dict[int, str]:
        return {i: a.label for i, a in self.accounts.items()}

    # --- what users saw -----------------------------------------------------------------

    def record_run(self, viewer: int, run: RunView) -> None:
        """An agent run as `viewer` saw it: its own events and any other event on the socket."""
        account = self.accounts[viewer]
        account.runs_started += 1
        account.runs_completed += int(run.completed)
        account.events_received += len(run.events)
        account.foreign_events += len(run.foreign)
        account.run_seconds.append(run.seconds)
        for event in run.events:
            # An event of the user's own run must carry nobody else's data either.
            for sighting in self.book.foreign(event, viewer):
                account.breaches.append(
                    self._breach("events", viewer, sighting, f"in run {_short(run.run_id)}")
                )
        own_token = self.book.token_of(viewer)
        for event in run.foreign:
            owners = self._owners_of_event(event, viewer)
            if not owners and own_token in _text(event):
                continue  # a stray event of the user's own earlier run: late, not leaked
            kind = str(event.get("type", "?"))
            for owner in owners or [None]:
                account.breaches.append(
                    Breach("events", viewer, owner, f"an {kind} event of another run")
                )

    def probe_sent(self, viewer: int, kind: ProbeKind) -> None:
        self.accounts[viewer].probes[kind].sent += 1

    def record_probe_failure(self, viewer: int, kind: ProbeKind, what: str) -> None:
        """A probe that got no answer (an error status, an exception): isolation unproven."""
        account = self.accounts[viewer]
        account.probes[kind].unanswered.append(what)
        account.errors.append(what)

    def record_thread_list(self, viewer: int, threads: Sequence[Mapping[str, Any]]) -> None:
        """`viewer`'s thread list: every thread in it that is not theirs is a breach."""
        account = self.accounts[viewer]
        account.probes["thread_lists"].answered += 1
        for thread in threads:
            owner = self._owner_of_thread.get(str(thread.get("id")))
            sightings = self.book.foreign(thread, viewer)
            user_id = thread.get("user_id")
            not_mine = (
                (owner is not None and owner != viewer)
                or bool(sightings)
                or (user_id is not None and str(user_id) != account.user_id)
            )
            if not not_mine:
                continue
            if owner is None:
                owner = next((s.owner for s in sightings), self.owner_of_user_id(user_id))
            account.breaches.append(Breach("thread_lists", viewer, owner, "a thread in their list"))

    def record_thread_access(
        self, viewer: int, owner: int, status: int, body: Mapping[str, Any]
    ) -> None:
        """`viewer` asked for a thread of `owner` by id: anything but a refusal is a breach."""
        account = self.accounts[viewer]
        if status >= 400 and status not in REFUSED_STATUSES:
            # Neither a refusal nor data: the probe says nothing about isolation.
            self.record_probe_failure(
                viewer, "thread_access", f"GET another user's thread answered {status}"
            )
            return
        account.probes["thread_access"].answered += 1
        if status in REFUSED_STATUSES and not self.book.foreign(body, viewer):
            return
        account.breaches.append(
            Breach("thread_access", viewer, owner, f"opened their thread by id ({status})")
        )

    def record_error(self, viewer: int, what: str) -> None:
        self.accounts[viewer].errors.append(what)

    # --- measurements -------------------------------------------------------------------

    @property
    def breaches(self) -> list[Breach]:
        return [b for account in self.accounts.values() for b in account.breaches]

    def breach_counts(self) -> dict[BreachKind, int]:
        counts = Counter(b.kind for b in self.breaches)
        return {kind: counts.get(kind, 0) for kind in BREACH_KINDS}

    def total(self, attribute: str) -> int:
        return sum(int(getattr(a, attribute)) for a in self.accounts.values())

    def errors(self) -> list[str]:
        return [f"{a.label}: {e}" for a in self.accounts.values() for e in a.errors]

    def probes(self, kind: ProbeKind) -> ProbeTally:
        """Every user's probes of `kind`, added up; failures prefixed with their user."""
        total = ProbeTally()
        for account in self.accounts.values():
            tally = account.probes[kind]
            total.sent += tally.sent
            total.answered += tally.answered
            total.unanswered += [f"{account.label}: {what}" for what in tally.unanswered]
        return total

    def probe_summary(self, kind: ProbeKind, limit: int = 3) -> str:
        """``"12 of 90 probes unanswered: 10 errors, e.g. user3: ... answered 500; 2 still
        running at the deadline"``, or ``""`` when every probe was answered."""
        tally = self.probes(kind)
        missing = tally.sent - tally.answered
        if missing <= 0:
            return ""
        parts = []
        if tally.unanswered:
            examples = "; ".join(tally.unanswered[:limit])
            parts.append(f"{len(tally.unanswered)} errors, e.g. {examples}")
        if tally.silent:
            parts.append(f"{tally.silent} still running at the deadline")
        return f"{missing} of {tally.sent} probes unanswered: " + "; ".join(parts)

    def examples(self, kind: BreachKind, limit: int = 3) -> list[str]:
        """A few breaches of `kind` in words: distinct viewers first, then distinct pairs."""
        breaches = [b for b in self.breaches if b.kind == kind]
        picked: list[Breach] = []
        viewers: set[int] = set()
        for breach in breaches:  # one per viewer: who saw, as widely as the run shows it
            if breach.viewer not in viewers and len(picked) < limit:
                viewers.add(breach.viewer)
                picked.append(breach)
        pairs = {(b.viewer, b.owner) for b in picked}
        for breach in breaches:
            if len(picked) >= limit:
                break
            if (breach.viewer, breach.owner) not in pairs:
                pairs.add((breach.viewer, breach.owner))
                picked.append(breach)
        return [b.describe(self.labels) for b in picked]

    def summary(self, kind: BreachKind, limit: int = 3) -> str:
        """``"12 breaches by 7 users, e.g. user3 saw data of user9 (...); ..."``, or ``""``."""
        breaches = [b for b in self.breaches if b.kind == kind]
        if not breaches:
            return ""
        viewers = len({b.viewer for b in breaches})
        owners = len({b.owner for b in breaches})
        examples = "; ".join(self.examples(kind, limit))
        return (
            f"{len(breaches)} breaches: {viewers} users saw data of {owners} others, "
            f"e.g. {examples}"
        )

    # --- helpers ------------------------------------------------------------------------

    def _owners_of_event(self, event: Mapping[str, Any], viewer: int) -> list[int | None]:
        owners: list[int | None] = [s.owner for s in self.book.foreign(event, viewer)]
        payload = event.get("payload")
        if isinstance(payload, Mapping):
            owner = self.owner_of_user_id(payload.get("user_id"))
            if owner is not None and owner != viewer and owner not in owners:
                owners.append(owner)
        return list(dict.fromkeys(owners))

    def _breach(self, kind: BreachKind, viewer: int, sighting: Sighting, where: str) -> Breach:
        return Breach(kind, viewer, sighting.owner, f"their canary {where}")


def _short(run_id: str) -> str:
    return run_id[:8] + "…" if run_id else "?"
