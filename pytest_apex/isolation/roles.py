"""Who does what in each round: the seeded share of users that cancel, reconnect, fail their
agent on purpose or hit the rate limit while everybody else runs calmly.

Real leaks live on the paths a calm user never takes: a run cancelled mid-stream hands a
half-used connection back to a pool, a reconnect replays a buffer, a failing run formats an
error from leftover state, a throttled socket is closed while events are in flight. A share
of users takes each path in each round, a different share every round (the seed makes the
draw reproducible, `--apex-seed`), and the calm majority is the containment control: their
runs must still complete, in time.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

Role = Literal["calm", "cancel", "reconnect", "fail", "rate_limit"]
ROLES: Final[tuple[Role, ...]] = ("calm", "cancel", "reconnect", "fail", "rate_limit")
# Roles whose runs must complete (a reconnecting user's run goes on while it is away).
COMPLETING: Final = frozenset({"calm", "reconnect", "rate_limit"})


@dataclass(frozen=True)
class Adversity:
    """The share of users on each path in an adversity round (the rest are calm)."""

    cancel: float = 0.2
    reconnect: float = 0.15
    fail: float = 0.1
    rate_limit: float = 0.05

    def __post_init__(self) -> None:
        shares = (self.cancel, self.reconnect, self.fail, self.rate_limit)
        if any(s < 0 for s in shares) or sum(shares) > 0.8:
            raise ValueError(
                f"adversity shares must be >= 0 and leave at least 20 % of users calm, got {shares}"
            )


def assign(
    users: Sequence[int],
    adversity: Adversity | None,
    rng: random.Random,
    previous: Mapping[int, Role] | None = None,
) -> dict[int, Role]:
    """Each user's role for one round; None: a calm round (the baseline).

    Users who took a path in the `previous` round are drawn last, so each round's share is a
    different one while there are calm users enough: a failing run that quotes the last
    failure then quotes another user's, not the same user's of the round before.
    """
    roles: dict[int, Role] = dict.fromkeys(users, "calm")
    if adversity is None or not users:
        return roles
    order = list(users)
    rng.shuffle(order)
    if previous:
        order.sort(key=lambda user: previous.get(user, "calm") != "calm")  # stable: still drawn
    start = 0
    paths: tuple[tuple[Role, float], ...] = (
        ("cancel", adversity.cancel),
        ("reconnect", adversity.reconnect),
        ("fail", adversity.fail),
        ("rate_limit", adversity.rate_limit),
    )
    for role, share in paths:
        # At least one user per path whenever its share is set: a path nobody took
        # proves nothing about it.
        count = max(1, math.floor(share * len(order))) if share > 0 else 0
        for user in order[start : start + count]:
            roles[user] = role
        start += count
    return roles


def pairings(users: Sequence[int], count: int, rng: random.Random) -> dict[int, list[int]]:
    """`count` other users each user probes this round, a new draw each round."""
    if len(users) < 2:
        return {u: [] for u in users}
    order = list(users)
    rng.shuffle(order)
    position = {u: i for i, u in enumerate(order)}
    steps = rng.sample(range(1, len(order)), min(count, len(order) - 1))
    return {u: [order[(position[u] + s) % len(order)] for s in steps] for u in users}
