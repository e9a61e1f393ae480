"""Everything each user received, on every channel, for the whole session — and its scan.

A leak does not keep to a run's window: a summary sent after the terminal event, an event
replayed after a reconnect, an error frame quoting someone else's request, a list body on
the second page. So nothing is filtered on arrival: every socket frame of every type (while
a run streams, between runs, after a reconnect, in the quiet drain window at the end) and
every REST body (error bodies included) is kept with when and where it arrived, and scanned
once the run is over, when every identity of every user is known (a run id learnt late
still counts in a frame that arrived early).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

from pytest_apex.isolation.identities import IdentityBook, Sighting

Channel = Literal["socket", "rest"]
CHANNELS: Final[tuple[Channel, ...]] = ("socket", "rest")
# When a frame arrived, relative to the receiving user's own runs.
IN_RUN: Final = "in a run"
BETWEEN: Final = "between runs"
AFTER_RECONNECT: Final = "after a reconnect"
DRAIN: Final = "in the drain window"
OUTSIDE_PHASES: Final = frozenset({BETWEEN, AFTER_RECONNECT, DRAIN})


@dataclass(slots=True)
class Received:
    """One payload a user received."""

    viewer: int
    channel: Channel
    at: float  # seconds since the scenario started
    text: str
    origin: str  # "socket 2, frame 17" or "GET /api/threads?offset=1 [200]"
    kind: str  # the frame's type, or the request's method and route
    phase: str = IN_RUN
    echoed: tuple[str, ...] = ()  # values the viewer sent with the request (probed ids)


@dataclass(frozen=True)
class Leak:
    """Another user's identity in something a user received."""

    received: Received
    sighting: Sighting

    @property
    def viewer(self) -> int:
        return self.received.viewer

    @property
    def owner(self) -> int | None:
        return self.sighting.owner

    def describe(self, labels: Mapping[int, str]) -> str:
        def name(index: int | None) -> str:
            return (
                "a user outside this run" if index is None else labels.get(index, f"user {index}")
            )

        got = self.received
        when = ", ".join(p for p in (got.kind, got.phase, f"at {got.at:.1f} s") if p)
        return (
            f"{name(self.viewer)} received data of {name(self.owner)}: "
            f"{self.sighting.describe()}, on {got.channel} {got.origin} ({when})"
        )


@dataclass
class ScanResult:
    leaks: list[Leak] = field(default_factory=list)
    checked: Counter[str] = field(default_factory=Counter)  # channel -> payloads scanned
    kinds: Counter[str] = field(default_factory=Counter)  # "socket agent_completed" -> count
    phases: Counter[str] = field(default_factory=Counter)  # socket frames by phase
    outside_frames: int = 0  # socket frames that arrived outside the viewer's own runs

    @property
    def total_checked(self) -> int:
        return sum(self.checked.values())

    def leaks_on(self, channel: Channel) -> list[Leak]:
        return [leak for leak in self.leaks if leak.received.channel == channel]

    @property
    def late_leaks(self) -> list[Leak]:
        """Leaks in socket frames that arrived outside any of the viewer's own runs."""
        return [
            leak
            for leak in self.leaks
            if leak.received.channel == "socket" and leak.received.phase in OUTSIDE_PHASES
        ]

    def matrix(self) -> Counter[tuple[int, int]]:
        """(viewer, owner) -> leaks; owners outside the run are left out."""
        return Counter((leak.viewer, leak.owner) for leak in self.leaks if leak.owner is not None)

    def summary(self, labels: Mapping[int, str], leaks: Sequence[Leak], limit: int = 3) -> str:
        """``"12 leaks: 7 users received data of 9 others, e.g. ..."``, or ``""``."""
        if not leaks:
            return ""
        viewers = len({leak.viewer for leak in leaks})
        owners = len({leak.owner for leak in leaks})
        picked: list[Leak] = []
        seen: set[int] = set()
        for leak in leaks:  # one example per viewer first: how widely it spread
            if leak.viewer not in seen and len(picked) < limit:
                seen.add(leak.viewer)
                picked.append(leak)
        examples = "; ".join(leak.describe(labels) for leak in picked)
        return (
            f"{len(leaks)} breaches: {viewers} users saw data of {owners} others, e.g. {examples}"
        )


class Inbox:
    """What every user received, in arrival order."""

    def __init__(self) -> None:
        self.items: list[Received] = []

    def add(self, received: Received) -> None:
        self.items.append(received)

    def __len__(self) -> int:
        return len(self.items)

    def of(self, viewer: int) -> list[Received]:
        return [r for r in self.items if r.viewer == viewer]

    def scan(self, book: IdentityBook) -> ScanResult:
        result = ScanResult()
        for received in self.items:
            result.checked[received.channel] += 1
            result.kinds[f"{received.channel} {received.kind}"] += 1
            if received.channel == "socket":
                result.phases[received.phase] += 1
                result.outside_frames += received.phase in OUTSIDE_PHASES
            for sighting in book.scan(received.text, received.viewer, received.echoed):
                result.leaks.append(Leak(received, sighting))
        return result


def timeline(items: Sequence[Received], leaks: Sequence[Leak]) -> list[tuple[float, str, str]]:
    """One viewer's socket frames as (time, type, "own" | "foreign" | "late") rows."""
    leaking = {id(leak.received) for leak in leaks}
    rows = []
    for received in items:
        if received.channel != "socket":
            continue
        if id(received) in leaking:
            mark = "late" if received.phase in OUTSIDE_PHASES else "foreign"
        else:
            mark = "own"
        rows.append((received.at, received.kind, mark))
    return rows
