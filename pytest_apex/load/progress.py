"""One live line per stage, so a five-minute run never looks hung.

    load stage 2/5 (25 users): 25 users, 312 req/s, p95 41.2 ms, 0 errors, 12/20 s

The engine builds a `Snapshot` every second or so and hands its line to a writer, a plain
callable ``(line, final)``: `final` is true for the stage's last line. `terminal_writer`
rewrites the line in place on a terminal and, in a log, writes one line every
`log_every_s` plus the final one. Tests pass a list's ``append``.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from pytest_apex.load.result import StageResult

Writer = Callable[[str, bool], None]


@dataclass(frozen=True)
class Snapshot:
    stage: int  # 1-based
    stages: int
    description: str
    users: int  # virtual users (closed) or sessions in flight (open) right now
    elapsed_s: float
    duration_s: float
    completed: int
    errors: int
    p95_s: float
    dropped: int = 0

    @property
    def requests_per_s(self) -> float:
        return self.completed / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def line(self) -> str:
        p95 = "p95 -" if math.isnan(self.p95_s) else f"p95 {_duration(self.p95_s)}"
        dropped = f", {self.dropped} dropped" if self.dropped else ""
        return (
            f"load stage {self.stage}/{self.stages} ({self.description}): {self.users} users, "
            f"{self.requests_per_s:.0f} req/s, {p95}, {self.errors} errors{dropped}, "
            f"{min(self.elapsed_s, self.duration_s):.0f}/{self.duration_s:.0f} s"
        )


def _duration(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 0.001:
        return f"{seconds * 1000:.1f} ms"
    return f"{seconds * 1e6:.0f} µs"


def terminal_writer(stream: TextIO | None = None, *, log_every_s: float = 10.0) -> Writer:
    """A writer for a terminal (one line rewritten in place) or a log (throttled lines)."""
    out = stream if stream is not None else sys.stderr
    tty = out.isatty()
    last = [-math.inf]

    def write(line: str, final: bool) -> None:
        if tty:
            out.write("\r\x1b[2K" + line + ("\n" if final else ""))
        else:
            now = time.monotonic()
            if not final and now - last[0] < log_every_s:
                return
            last[0] = now
            out.write(line + "\n")
        out.flush()

    return write


def silent(line: str, final: bool) -> None:
    """A writer that writes nothing (worker processes report to their parent instead)."""


def combined(snapshots: Mapping[int, Snapshot]) -> Snapshot:
    """One live line for a stage several workers run: their users and counts summed."""
    parts = list(snapshots.values())
    first = parts[0]
    p95s = [p.p95_s for p in parts if not math.isnan(p.p95_s)]
    return Snapshot(
        first.stage,
        first.stages,
        first.description,
        sum(p.users for p in parts),
        max(p.elapsed_s for p in parts),
        first.duration_s,
        sum(p.completed for p in parts),
        sum(p.errors for p in parts),
        max(p95s) if p95s else math.nan,  # the worst worker's: a live line, not a verdict
        sum(p.dropped for p in parts),
    )


def final_line(result: StageResult, writer: Writer) -> None:
    """The stage's last line, from its (merged) result."""
    latency = result.latency()
    writer(
        Snapshot(
            result.index,
            result.count,
            result.description,
            result.reached,
            result.elapsed_s,
            result.duration_s,
            result.completed,
            sum(result.errors.values()),
            latency.p95_s,
            result.dropped,
        ).line(),
        True,
    )
