"""A run's users in shares: one share per process or machine, driven phase by phase.

A scenario's coordinator calls one phase on every share at once (`Shares.each`) and hands
what each share published to all of them before the next phase, so every share knows every
identity of the run before its users read. A share whose process is gone (`ShareLost`, its
message naming where it ran) drops out; the others go on, and the run's criteria that held
are inconclusive, since what its users would have seen is unknown.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

Handle = TypeVar("Handle")


class ShareLost(Exception):
    """A share's process is gone (its message says which and where)."""


def share_indices(users: int, shares: int) -> list[list[int]]:
    """Users 0 … users - 1 dealt over `shares` like cards (so each share holds some of the
    first users and some of the last)."""
    return [list(range(k, users, shares)) for k in range(shares)]


class Shares(Generic[Handle]):
    """The shares still running, and why each lost one was lost."""

    def __init__(self, shares: Sequence[Handle]) -> None:
        self.live = list(shares)
        self.lost: list[str] = []

    async def each(self, call: Callable[[Handle], Awaitable[Any]]) -> list[Any]:
        """`call` on every live share at once; what each returned (None left out)."""

        async def one(share: Handle) -> Any:
            try:
                return await call(share)
            except ShareLost as exc:
                self.lost.append(str(exc))
                self.live.remove(share)
                return None

        answers = await asyncio.gather(*(one(s) for s in list(self.live)))
        return [a for a in answers if a is not None]
