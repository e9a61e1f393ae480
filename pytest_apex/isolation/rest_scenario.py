"""REST isolation: many users at once on an app's owned resources, nobody sees anyone else.

For an app without agent runs (or next to them), every user of the run:

1. logs in and creates items of every described resource, and items of each sub-resource
   under them, each marked with the user's canary;
2. for a number of rounds, each released for everybody at the same moment: first writes
   (one more item of every top-level resource, and an update of one of its items), then,
   once every user has written, reads: lists every collection (every page, at each page
   size), reads its own items by id (the positive control, repeated across rounds and after
   everybody else's writes: a cache keyed wrongly shows on a later read), lists the
   sub-resources of its items, and probes other users' items, a new seeded pairing each
   round: read them, list the sub-resources under them, update them, create a sub-resource
   under them. Every probe must be refused.

Everything each user received, error answers included, is scanned for other users'
identities (canaries, user ids, user names, item ids). A probe that the app serves (2xx) is
a breach even if it carries nothing recognisable; a probe that errs (5xx, no answer) proves
nothing and is counted as unanswered, never as refused. One user whose sign-up or setup
fails is counted, with an example of its error, and the run goes on with the others.

The users live in shares (`RestShare`): one for a run in one process, one per machine for a
run spread over a cluster. Setup, each round's writes and each round's reads are phases run
on every share at once; after each, every share learns every identity and probe target the
others published, so every read is scanned against the identities of the whole run.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from operator import methodcaller
from typing import Any, Final, Literal, Protocol

from pytest_apex.adapters.base import ResourceSession
from pytest_apex.app.model import Resource
from pytest_apex.isolation.canary import CANARY_PREFIX, USER_HEX, CanaryBook
from pytest_apex.isolation.identities import Identity, IdentityBook, IdentityKind, Sighting
from pytest_apex.isolation.shares import Shares

BreachChannel = Literal[
    "list", "read", "update", "sub_list", "probe", "probe_sub_list", "probe_write"
]
EXAMPLES: Final = 3


class Answered(Protocol):
    """What the scenario needs of one HTTP answer (`pytest_apex.adapters.rest.Answer` fits)."""

    method: str
    url: str
    status: int
    body: Any
    text: str

    @property
    def ok(self) -> bool: ...

    @property
    def refused(self) -> bool: ...


@dataclass(frozen=True)
class ResourcePlan:
    """One described resource as the scenario uses it (plain values from the description)."""

    name: str
    id_field: str = "id"
    can_read: bool = True  # has an item route
    can_update: bool = False
    page_sizes: tuple[int | None, ...] = (None,)
    sub_resources: tuple[ResourcePlan, ...] = ()


@dataclass(frozen=True)
class RestScenarioSpec:
    users: int
    resources: tuple[ResourcePlan, ...]
    items_per_resource: int = 2
    rounds: int = 2
    probes_per_user: int = 3
    seed: int = 0
    deadline_s: float = 300.0

    def __post_init__(self) -> None:
        if self.users < 2:
            raise ValueError(f"isolation needs at least 2 users, got {self.users}")
        if not self.resources:
            raise ValueError("REST isolation needs at least one resource users own")


@dataclass(frozen=True)
class RestBreach:
    channel: BreachChannel
    viewer: int
    owner: int | None
    detail: str
    # The identity seen (never shown: a canary is not handed on), so that an owner the
    # viewer's share did not know yet is resolved against the whole run's book at the end.
    seen: str = field(default="", repr=False)


@dataclass(frozen=True)
class ProbeTarget:
    """An item other users probe: the first item of each top-level resource of a user."""

    owner: int
    resource: str
    item_id: str


@dataclass(frozen=True)
class Published:
    """What a share of the users tells the others after a phase: every identity it issued
    since its last phase, the probe targets of its users (after setup), how many are ready."""

    identities: tuple[Identity, ...] = ()
    targets: tuple[ProbeTarget, ...] = ()
    users_ready: int = 0


@dataclass
class RestScenarioResult:
    """Counts of everything the users did and saw, and every breach."""

    spec: RestScenarioSpec
    labels: dict[int, str] = field(default_factory=dict)
    user_ids: dict[int, str] = field(default_factory=dict)  # user index -> the app's user id
    users_ready: int = 0
    setup_errors: Counter[str] = field(default_factory=Counter)
    error_examples: dict[str, str] = field(default_factory=dict)
    answers_scanned: int = 0
    items_created: int = 0
    own_listed: int = 0  # own items found in the user's own listings (control)
    own_expected_in_lists: int = 0
    own_reads: int = 0
    own_reads_ok: int = 0  # own item read back with the user's canary (control)
    probes_sent: int = 0
    probes_refused: int = 0
    probes_served: int = 0
    probes_unanswered: int = 0
    breaches: list[RestBreach] = field(default_factory=list)
    wall_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    # Shares of the users whose process was lost mid-run (a Ray actor that died), each
    # naming where it ran: whatever its users would have seen is unknown.
    lost: list[str] = field(default_factory=list)

    def error(self, kind: str, example: str) -> None:
        self.setup_errors[kind] += 1
        self.error_examples.setdefault(kind, example[:300])

    def breach_counts(self) -> Counter[str]:
        return Counter(b.channel for b in self.breaches)

    def describe_breaches(self, channels: Sequence[str], examples: int = EXAMPLES) -> str:
        """``"12 breaches: 7 users saw data of 9 others, e.g. user3 saw data of user9 (...)"``."""
        chosen = [b for b in self.breaches if b.channel in channels]
        if not chosen:
            return ""
        viewers, owners = len({b.viewer for b in chosen}), len({b.owner for b in chosen})
        summary = f"{len(chosen)} breaches: {viewers} users saw data of {owners} others, e.g. "

        def name(index: int | None) -> str:
            return (
                "a user outside this run" if index is None else self.labels.get(index, str(index))
            )

        return summary + "; ".join(
            f"{name(b.viewer)} saw data of {name(b.owner)} ({b.channel}: {b.detail})"
            for b in chosen[:examples]
        )

    def describe_errors(self) -> str:
        return "; ".join(
            f"{count} × {kind} (e.g. {self.error_examples[kind]})"
            for kind, count in self.setup_errors.most_common()
        )


MakeUser = Callable[[int], Awaitable[ResourceSession]]


@dataclass
class _User:
    index: int
    session: ResourceSession
    canary: str
    items: dict[str, list[str]] = field(default_factory=dict)  # resource -> own item ids
    # sub-resource -> (parent id, parent resource) of each of its items, in `items` order
    parents: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    probe_rounds: int = 0

    def own_under(self, name: str, parent_id: str) -> set[str]:
        """The user's own items of `name` (under `parent_id`, for a sub-resource)."""
        items = self.items.get(name, [])
        if not parent_id:
            return set(items)
        return {i for i, (p, _) in zip(items, self.parents[name], strict=True) if p == parent_id}


def new_book(spec: RestScenarioSpec) -> IdentityBook:
    """An empty book of the run's identities, numeric ids recognised under its id fields."""
    return IdentityBook(frozenset(plan.id_field for plan in _all_plans(spec.resources)))


class RestShare:
    """The users `indices` of a run, driven phase by phase (`setup`, then per round `write`
    and `read`); each phase returns what the other shares must learn before the next one.

    One share holds every user of a local run; a run spread over machines has one share per
    machine, and the coordinator hands each one what the others published, so that every
    share's book knows every identity of the run before its users read.
    """

    def __init__(self, spec: RestScenarioSpec, indices: Sequence[int], make_user: MakeUser) -> None:
        self.spec = spec
        self.indices = tuple(indices)
        self.make_user = make_user
        self.result = RestScenarioResult(spec)
        self.canaries = CanaryBook()
        self.identities = new_book(spec)
        self.users: list[_User] = []
        self.targets: dict[tuple[int, str], ProbeTarget] = {}
        self._unpublished: list[Identity] = []

    def _own(self, owner: int, value: object, kind: IdentityKind, label: str = "") -> None:
        self.identities.add(owner, value, kind, label)
        self._unpublished.append((owner, str(value), kind, label))

    def _publish(self, targets: tuple[ProbeTarget, ...] = (), ready: int = 0) -> Published:
        identities, self._unpublished = tuple(self._unpublished), []
        return Published(identities, targets, ready)

    # --- the phases ---------------------------------------------------------------------

    async def setup(self) -> Published:
        """Every user of the share signs up and creates its items, all at once."""
        ready = await asyncio.gather(*(self.setup_user(i) for i in self.indices))
        self.users = [u for u in ready if u is not None]
        self.result.users_ready = len(self.users)
        self.result.labels = {u.index: u.session.username for u in self.users}
        self.result.user_ids = {u.index: u.session.user_id for u in self.users}
        targets = tuple(
            ProbeTarget(user.index, plan.name, user.items[plan.name][0])
            for user in self.users
            for plan in self.spec.resources
            if plan.can_read and user.items.get(plan.name)
        )
        return self._publish(targets, len(self.users))

    async def learn(self, published: Sequence[Published]) -> None:
        """What every share published in the phase just ended (this one's too)."""
        for part in published:
            self.identities.add_all(part.identities)
            for target in part.targets:
                self.targets.setdefault((target.owner, target.resource), target)

    async def write(self, round_no: int) -> Published:
        await asyncio.gather(*(self.write_user(u, round_no) for u in self.users))
        return self._publish()

    async def read(self) -> Published:
        await asyncio.gather(*(self.read_user(u) for u in self.users))
        return self._publish()

    async def outcome(self) -> RestScenarioResult:
        return self.result

    # --- seeing -------------------------------------------------------------------------

    def scan(self, user: _User, answers: Sequence[Answered], channel: BreachChannel) -> None:
        for answer in answers:
            self.result.answers_scanned += 1
            for sighting in self.identities.foreign(answer.body, answer.text, user.index):
                # An id the viewer put in the URL itself (a probe) is no leak when echoed
                # back ("notebook <id> not found"); a served probe is judged on its own.
                if sighting.value not in answer.url:
                    self._breach(user, channel, sighting, answer)

    def _breach(
        self, user: _User, channel: BreachChannel, seen: Sighting, answer: Answered
    ) -> None:
        detail = f"{answer.method} {answer.url} [{answer.status}] carried {seen.describe()}"
        breach = RestBreach(channel, user.index, seen.owner, detail, seen.value)
        self.result.breaches.append(breach)

    # --- setup --------------------------------------------------------------------------

    def item_canary(self, user: _User, label: str) -> str:
        """A new canary for one of `user`'s items, known as theirs from now on."""
        token = self.canaries.item(user.index, label)
        self._own(user.index, token, "canary", label)
        return token

    async def setup_user(self, index: int) -> _User | None:
        try:
            session = await self.make_user(index)
        except Exception as exc:  # the app under test may fail any user: count it, go on
            self.result.error("sign-up or login failed", f"user {index}: {_said(exc)}")
            return None
        canary = self.canaries.issue(index)
        user = _User(index, session, canary)
        self._own(index, canary, "canary")
        self._own(index, session.user_id, "user_id")
        self._own(index, session.username, "username")
        try:
            for plan in self.spec.resources:
                await self._create_items(user, plan, parent=None)
        except Exception as exc:
            self.result.error("creating resources failed", f"user {index}: {_said(exc)}")
            return None
        return user

    async def _create_items(
        self, user: _User, plan: ResourcePlan, parent: tuple[str, str] | None
    ) -> None:
        for k in range(self.spec.items_per_resource):
            await self._create_one(user, plan, parent, f"{plan.name} {k}")

    async def _create_one(
        self, user: _User, plan: ResourcePlan, parent: tuple[str, str] | None, label: str
    ) -> None:
        # One item, marked at the start of its text with its own canary.
        marker = f"{self.item_canary(user, label)} {label}"
        # Setup may resend a create whose connection dropped: a duplicate is still the
        # user's own item (the listing control counts only the ids it got back).
        answer = await user.session.create(
            plan.name, {"canary": marker}, parent_id=parent[0] if parent else "", resend=True
        )
        if not answer.ok:
            raise RuntimeError(
                f"{answer.method} {answer.url} answered {answer.status}: {answer.text[:200]}"
            )
        item_id = _field(answer.body, plan.id_field)
        if item_id is None:
            raise RuntimeError(
                f"{answer.method} {answer.url}: no {plan.id_field!r} in the created {plan.name}"
            )
        self._own(user.index, item_id, "item_id")
        self.result.items_created += 1
        user.items.setdefault(plan.name, []).append(str(item_id))
        if parent is not None:
            user.parents.setdefault(plan.name, []).append(parent)
        for sub in plan.sub_resources:
            await self._create_items(user, sub, parent=(str(item_id), plan.name))

    # --- the concurrent rounds ----------------------------------------------------------

    async def write_user(self, user: _User, round_no: int) -> None:
        """A round's writes: one more item of each top-level resource, one update."""
        for plan in self.spec.resources:
            label = f"{plan.name} of round {round_no}"
            await self._guarded(
                user, f"creating {plan.name}", self._create_one(user, plan, None, label)
            )
        for plan in _all_plans(self.spec.resources):
            if plan.can_update and user.items.get(plan.name):
                await self._guarded(user, f"updating {plan.name}", self._update(user, plan))

    async def read_user(self, user: _User) -> None:
        """A round's reads, after every user's writes of the round."""
        for plan in _all_plans(self.spec.resources):
            await self._guarded(user, f"listing {plan.name}", self._list_own(user, plan))
            if plan.can_read:
                await self._guarded(user, f"reading {plan.name}", self._read_own(user, plan))
        await self._probe(user)

    async def _guarded(self, user: _User, doing: str, step: Awaitable[None]) -> None:
        # One user's failing request is counted with an example (its own controls then come
        # up short), never a lost run for everybody else.
        try:
            await step
        except Exception as exc:
            self.result.error(f"{doing} raised", f"{user.session.username}: {_said(exc)}")

    async def _update(self, user: _User, plan: ResourcePlan) -> None:
        values = {"canary": f"{self.item_canary(user, plan.name + ' update')} {plan.name} updated"}
        answer = await user.session.update(plan.name, user.items[plan.name][0], values)
        self.scan(user, [answer], "update")

    async def _list_own(self, user: _User, plan: ResourcePlan) -> None:
        is_sub = plan.name in user.parents
        channel: BreachChannel = "sub_list" if is_sub else "list"
        parent_ids = dict.fromkeys(p for p, _ in user.parents[plan.name]) if is_sub else {"": None}
        for parent_id in parent_ids:
            expected = user.own_under(plan.name, parent_id)
            for size in plan.page_sizes:
                # Expected before asking: a listing that raises leaves the control short.
                self.result.own_expected_in_lists += len(expected)
                items, pages = await user.session.list_all(plan.name, parent_id, size)
                self.scan(user, pages, channel)
                listed = {str(_field(i, plan.id_field)) for i in items if isinstance(i, dict)}
                self.result.own_listed += len(expected & listed)

    async def _read_own(self, user: _User, plan: ResourcePlan) -> None:
        for item_id in user.items.get(plan.name, ())[:2]:
            self.result.own_reads += 1
            answer = await user.session.read(plan.name, item_id)
            # Read back with the user's canary (its user part: each item has its own token).
            mine = user.canary[: len(CANARY_PREFIX) + USER_HEX]
            self.result.own_reads_ok += int(answer.ok and mine in answer.text)
            self.scan(user, [answer], "read")

    async def _probe(self, user: _User) -> None:
        # Every other user of the run, wherever its share runs, in one order on every share.
        plans = {plan.name: plan for plan in self.spec.resources}
        candidates = [
            (target.owner, plans[target.resource], target.item_id)
            for _, target in sorted(self.targets.items())
            if target.owner != user.index and target.resource in plans
        ]
        count = min(len(candidates), self.spec.probes_per_user)
        # Each user's own draw per round, so a seed repeats the run however the users'
        # requests interleave.
        user.probe_rounds += 1
        draw = random.Random(hash((self.spec.seed, user.index, user.probe_rounds)))
        for other, plan, item_id in draw.sample(candidates, count):
            read = user.session.read(plan.name, item_id)
            answer = await self._probe_one(user, read)
            self._judge_probe(user, other, answer, "probe", f"{plan.name} {item_id}")
            for sub in plan.sub_resources:
                listing = _last_page(user.session.list_all(sub.name, item_id))
                sub_answer = await self._probe_one(user, listing)
                self._judge_probe(
                    user, other, sub_answer, "probe_sub_list", f"{sub.name} of {item_id}"
                )
                # Writing under another user's item: refused, or the item is no longer theirs.
                marker = f"{self.item_canary(user, 'probe write')} probe write"
                # Resent once if the connection dropped: a second copy of a probe changes
                # nothing (refused twice, or served, which is the breach either way).
                create = user.session.create(
                    sub.name, {"canary": marker}, parent_id=item_id, resend=True
                )
                write = await self._probe_one(user, create)
                self._judge_probe(
                    user, other, write, "probe_write", f"a new {sub.name} under {item_id}"
                )
            if plan.can_update:
                marker = f"{self.item_canary(user, 'probe write')} probe write"
                update = user.session.update(plan.name, item_id, {"canary": marker}, resend=True)
                write = await self._probe_one(user, update)
                self._judge_probe(user, other, write, "probe_write", f"an update of {item_id}")

    async def _probe_one(self, user: _User, action: Awaitable[Any]) -> Any:
        self.result.probes_sent += 1
        try:
            return await action
        except Exception as exc:
            self.result.probes_unanswered += 1
            self.result.error("probe raised", f"{self.result.labels.get(user.index)}: {_said(exc)}")
            return None

    def _judge_probe(
        self, user: _User, other: int, answer: Any, channel: BreachChannel, what: str
    ) -> None:
        if answer is None:
            return
        self.scan(user, [answer], channel)
        if answer.refused:
            self.result.probes_refused += 1
        elif answer.ok:
            self.result.probes_served += 1
            served = RestBreach(
                channel,
                user.index,
                other,
                f"{answer.method} {answer.url} served {what} of another user ({answer.status})",
            )
            self.result.breaches.append(served)
        else:
            self.result.probes_unanswered += 1
            self.result.error(
                f"probe answered {answer.status}",
                f"{answer.method} {answer.url}: {answer.text[:200]}",
            )


async def _last_page(listing: Awaitable[tuple[list[Any], list[Any]]]) -> Any:
    _items, pages = await listing
    return pages[-1] if pages else None


def _all_plans(plans: Sequence[ResourcePlan]) -> list[ResourcePlan]:
    return [p for plan in plans for p in (plan, *plan.sub_resources)]


def _field(body: Any, name: str) -> Any:
    return body.get(name) if isinstance(body, dict) else None


def _said(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]


class RestShareHandle(Protocol):
    """A share as the coordinator drives it: a `RestShare` here, or one on another machine
    (`pytest_apex.executors.ray_isolation`). Each call may raise `ShareLost`."""

    async def setup(self) -> Published: ...

    async def learn(self, published: Sequence[Published]) -> None: ...

    async def write(self, round_no: int) -> Published: ...

    async def read(self) -> Published: ...

    async def outcome(self) -> RestScenarioResult: ...


class _Coordinator:
    """Runs the phases on every share at once and hands each phase's news to all of them."""

    def __init__(self, spec: RestScenarioSpec, shares: Sequence[RestShareHandle]) -> None:
        self.spec = spec
        self.shares = Shares(shares)
        self.book = new_book(spec)  # every identity of the run: resolves what a share did not

    async def phase(self, call: Callable[[RestShareHandle], Awaitable[Published]]) -> int:
        published: list[Published] = await self.shares.each(call)
        for part in published:
            self.book.add_all(part.identities)
        await self.shares.each(lambda share: share.learn(published))
        return sum(p.users_ready for p in published)

    async def run(self) -> None:
        ready = await self.phase(lambda share: share.setup())
        if ready < 2:
            return
        for round_no in range(self.spec.rounds):
            # Everybody writes, then everybody reads: every read of the round comes after
            # every other user's write, the moment a wrongly keyed cache shows.
            await self.phase(methodcaller("write", round_no))
            await self.phase(lambda share: share.read())

    def merged(self, parts: Sequence[RestScenarioResult]) -> RestScenarioResult:
        result = merge_results(self.spec, parts)
        result.lost = list(self.shares.lost)
        # A sighting a share could not attribute (its owner's identity published later)
        # is resolved against every identity of the run.
        result.breaches = [
            replace(b, owner=self.book.owner_of(b.seen))
            if b.owner is None and b.seen and self.book.owner_of(b.seen) is not None
            else b
            for b in result.breaches
        ]
        return result


def merge_results(
    spec: RestScenarioSpec, parts: Sequence[RestScenarioResult]
) -> RestScenarioResult:
    """One result of every share's: counts summed, breaches, labels and errors joined."""
    merged = RestScenarioResult(spec)
    for part in parts:
        merged.labels.update(part.labels)
        merged.user_ids.update(part.user_ids)
        merged.setup_errors.update(part.setup_errors)
        for kind, example in part.error_examples.items():
            merged.error_examples.setdefault(kind, example)
        merged.breaches.extend(part.breaches)
        merged.notes.extend(n for n in part.notes if n not in merged.notes)
        for name in _COUNTS:
            setattr(merged, name, getattr(merged, name) + getattr(part, name))
    return merged


_COUNTS: Final = (
    "users_ready",
    "answers_scanned",
    "items_created",
    "own_listed",
    "own_expected_in_lists",
    "own_reads",
    "own_reads_ok",
    "probes_sent",
    "probes_refused",
    "probes_served",
    "probes_unanswered",
)


async def run_shares(
    spec: RestScenarioSpec, shares: Sequence[RestShareHandle]
) -> RestScenarioResult:
    """The scenario over `shares` (together holding users 0 … spec.users - 1); every step
    bounded by `spec.deadline_s` as a whole."""
    coordinator = _Coordinator(spec, shares)
    started = time.monotonic()
    notes = []
    try:
        async with asyncio.timeout(spec.deadline_s):
            await coordinator.run()
    except TimeoutError:
        notes.append(f"the deadline of {spec.deadline_s:g} s passed; the rest was cancelled")
    parts: list[RestScenarioResult] = await coordinator.shares.each(lambda s: s.outcome())
    result = coordinator.merged(parts)
    result.notes.extend(notes)
    result.wall_seconds = time.monotonic() - started
    return result


async def run_rest_isolation(spec: RestScenarioSpec, make_user: MakeUser) -> RestScenarioResult:
    """Run the scenario with every user in this process."""
    return await run_shares(spec, [RestShare(spec, range(spec.users), make_user)])


def plans_for(resources: Sequence[Resource]) -> tuple[ResourcePlan, ...]:
    """The scenario's plan for each described resource: what it can do, which page sizes.

    A paginated collection is listed at its default page size and at size 1, so every page
    boundary is crossed (a cache keyed without the page shows on the second page), and at
    its largest page size when the description gives one.
    """

    def plan(resource: Resource) -> ResourcePlan:
        paging = resource.pagination
        sizes: tuple[int | None, ...] = (None,)
        if paging.style != "none":
            sizes = tuple(dict.fromkeys((None, 1, paging.max_size or None)))
        return ResourcePlan(
            name=resource.name,
            id_field=resource.id_field,
            can_read=bool(resource.item),
            can_update=bool(resource.item and resource.update),
            page_sizes=sizes,
            sub_resources=tuple(plan(sub) for sub in resource.sub_resources),
        )

    return tuple(plan(r) for r in resources)
