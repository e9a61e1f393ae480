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
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, Protocol

from pytest_apex.adapters.base import ResourceSession
from pytest_apex.app.model import Resource
from pytest_apex.isolation.canary import CANARY_PREFIX, USER_HEX, CanaryBook
from pytest_apex.isolation.identities import IdentityBook, Sighting

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


@dataclass
class RestScenarioResult:
    """Counts of everything the users did and saw, and every breach."""

    spec: RestScenarioSpec
    labels: dict[int, str] = field(default_factory=dict)
    user_ids: list[str] = field(default_factory=list)
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


class _Run:
    def __init__(self, spec: RestScenarioSpec, result: RestScenarioResult) -> None:
        self.spec = spec
        self.result = result
        self.canaries = CanaryBook()
        id_fields = {plan.id_field for plan in _all_plans(spec.resources)}
        self.identities = IdentityBook(frozenset(id_fields))
        self.users: list[_User] = []

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
        self.result.breaches.append(RestBreach(channel, user.index, seen.owner, detail))

    # --- setup --------------------------------------------------------------------------

    def item_canary(self, user: _User, label: str) -> str:
        """A new canary for one of `user`'s items, known as theirs from now on."""
        token = self.canaries.item(user.index, label)
        self.identities.add(user.index, token, "canary", label)
        return token

    async def setup(self, index: int, make_user: MakeUser) -> _User | None:
        try:
            session = await make_user(index)
        except Exception as exc:  # the app under test may fail any user: count it, go on
            self.result.error("sign-up or login failed", f"user {index}: {_said(exc)}")
            return None
        canary = self.canaries.issue(index)
        user = _User(index, session, canary)
        self.identities.add(index, canary, "canary")
        self.identities.add(index, session.user_id, "user_id")
        self.identities.add(index, session.username, "username")
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
        self.identities.add(user.index, item_id, "item_id")
        self.result.items_created += 1
        user.items.setdefault(plan.name, []).append(str(item_id))
        if parent is not None:
            user.parents.setdefault(plan.name, []).append(parent)
        for sub in plan.sub_resources:
            await self._create_items(user, sub, parent=(str(item_id), plan.name))

    # --- the concurrent rounds ----------------------------------------------------------

    async def write(self, user: _User, round_no: int) -> None:
        """A round's writes: one more item of each top-level resource, one update."""
        for plan in self.spec.resources:
            label = f"{plan.name} of round {round_no}"
            await self._guarded(
                user, f"creating {plan.name}", self._create_one(user, plan, None, label)
            )
        for plan in _all_plans(self.spec.resources):
            if plan.can_update and user.items.get(plan.name):
                await self._guarded(user, f"updating {plan.name}", self._update(user, plan))

    async def read(self, user: _User, others: Sequence[_User]) -> None:
        """A round's reads, after every user's writes of the round."""
        for plan in _all_plans(self.spec.resources):
            await self._guarded(user, f"listing {plan.name}", self._list_own(user, plan))
            if plan.can_read:
                await self._guarded(user, f"reading {plan.name}", self._read_own(user, plan))
        await self._probe(user, others)

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

    async def _probe(self, user: _User, others: Sequence[_User]) -> None:
        candidates = [
            (other, plan, item_id)
            for other in others
            if other.index != user.index
            for plan in self.spec.resources
            if plan.can_read
            for item_id in other.items.get(plan.name, ())[:1]
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
        self, user: _User, other: _User, answer: Any, channel: BreachChannel, what: str
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
                other.index,
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


async def run_rest_isolation(spec: RestScenarioSpec, make_user: MakeUser) -> RestScenarioResult:
    """Run the scenario; every step bounded by `spec.deadline_s` as a whole."""
    result = RestScenarioResult(spec)
    run = _Run(spec, result)
    started = time.monotonic()
    try:
        async with asyncio.timeout(spec.deadline_s):
            ready = await asyncio.gather(*(run.setup(i, make_user) for i in range(spec.users)))
            run.users = [u for u in ready if u is not None]
            result.users_ready = len(run.users)
            result.labels = {u.index: u.session.username for u in run.users}
            result.user_ids = [u.session.user_id for u in run.users]
            if len(run.users) >= 2:
                for round_no in range(spec.rounds):
                    # Everybody writes, then everybody reads: every read of the round comes
                    # after every other user's write, the moment a wrongly keyed cache shows.
                    await asyncio.gather(*(run.write(u, round_no) for u in run.users))
                    await asyncio.gather(*(run.read(u, run.users) for u in run.users))
    except TimeoutError:
        result.notes.append(f"the deadline of {spec.deadline_s:g} s passed; the rest was cancelled")
    result.wall_seconds = time.monotonic() - started
    return result


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
