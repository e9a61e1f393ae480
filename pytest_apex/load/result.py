"""What a stage and a plan produced, as plain values that travel between processes.

`encode()` gives JSON-able data (histograms as HdrHistogram's base64 blobs); `merge` adds the
results of several workers exactly: histograms with `decode_and_add`, counts summed, the
generator's health the worst of them.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pytest_apex.load.generator import GeneratorHealth
from pytest_apex.load.measure import OpMeasurements, Summary, merged_latency, summarize

Model = Literal["closed", "open"]
StopReason = Literal["duration", "max_requests"]


@dataclass
class StageResult:
    """One stage's measurements.

    `target`: users (closed) or sessions scheduled over the full duration (open); `reached`:
    the most users that were running at once (closed) or the arrivals that came due (open).
    A stage whose `reached` is below its `target` never applied the load it was judged for.
    """

    index: int  # 1-based
    count: int  # stages in the plan
    model: Model
    description: str
    target: int
    reached: int
    duration_s: float
    elapsed_s: float
    window_s: float
    health: GeneratorHealth
    ops: dict[str, OpMeasurements] = field(default_factory=dict)
    requests: int = 0  # operations started
    sessions: int = 0  # sessions started
    dropped: int = 0  # open model: starts that could not be made on time
    stopped_by: StopReason = "duration"
    workers: int = 1
    peak_users: int = 0  # the most users (closed) or sessions in flight (open) at once
    # Unix times of the stage's start and end (NaN: not known), to read the server's view
    # of the same window from its monitoring.
    started_at: float = math.nan
    ended_at: float = math.nan
    # Workers whose share of the stage is missing (one that died, say, named with its
    # node): such a stage measured less than its load, so it judges nothing.
    lost: tuple[str, ...] = ()

    @property
    def reached_target(self) -> bool:
        return self.reached >= self.target

    @property
    def ok(self) -> int:
        return sum(op.ok for op in self.ops.values())

    @property
    def errors(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for op in self.ops.values():
            total.update(op.errors)
        return total

    @property
    def completed(self) -> int:
        return self.ok + sum(self.errors.values())

    @property
    def requests_per_s(self) -> float:
        return self.completed / self.elapsed_s if self.elapsed_s > 0 else math.nan

    @property
    def error_rate(self) -> float:
        return sum(self.errors.values()) / self.completed if self.completed else math.nan

    def latency(self, op: str | None = None) -> Summary:
        """Latency of one operation, or of all of them (None)."""
        if op is not None:
            return summarize(self.ops[op].latency)
        return summarize(merged_latency(self.ops.values()))

    def window_indexes(self) -> list[int]:
        return sorted({index for op in self.ops.values() for index in op.windows})

    def encode(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "count": self.count,
            "model": self.model,
            "description": self.description,
            "target": self.target,
            "reached": self.reached,
            "duration_s": self.duration_s,
            "elapsed_s": self.elapsed_s,
            "window_s": self.window_s,
            "health": self.health.to_json(),
            "ops": {name: op.encode() for name, op in self.ops.items()},
            "requests": self.requests,
            "sessions": self.sessions,
            "dropped": self.dropped,
            "stopped_by": self.stopped_by,
            "workers": self.workers,
            "peak_users": self.peak_users,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "lost": list(self.lost),
        }

    @classmethod
    def decode(cls, data: Mapping[str, Any]) -> StageResult:
        result = cls(
            index=data["index"],
            count=data["count"],
            model=data["model"],
            description=data["description"],
            target=data["target"],
            reached=data["reached"],
            duration_s=data["duration_s"],
            elapsed_s=data["elapsed_s"],
            window_s=data["window_s"],
            health=GeneratorHealth.from_json(data["health"]),
            requests=data["requests"],
            sessions=data["sessions"],
            dropped=data["dropped"],
            stopped_by=data["stopped_by"],
            workers=data["workers"],
            peak_users=data["peak_users"],
            started_at=data.get("started_at", math.nan),
            ended_at=data.get("ended_at", math.nan),
            lost=tuple(data.get("lost", ())),
        )
        for name, op in data["ops"].items():
            result.ops[name] = OpMeasurements()
            result.ops[name].add_encoded(op)
        return result


def _nan_min(a: float, b: float) -> float:
    """The smaller of two times, ignoring an unknown (NaN) one."""
    if math.isnan(a):
        return b
    return a if math.isnan(b) else min(a, b)


def merge_stages(
    parts: Iterable[StageResult], *, targets: tuple[int, str] | None = None
) -> StageResult:
    """One stage measured by several workers, as if one generator had measured it.

    `targets`: the whole stage's target and description (a worker only knows its share).
    """
    parts = list(parts)
    if not parts:
        raise ValueError("nothing to merge")
    first = parts[0]
    merged = StageResult.decode(first.encode())
    for part in parts[1:]:
        if (part.index, part.model, part.window_s) != (first.index, first.model, first.window_s):
            raise ValueError("cannot merge results of different stages")
        for name, op in part.ops.items():
            merged.ops.setdefault(name, OpMeasurements()).add_encoded(op.encode())
        merged.target += part.target
        merged.reached += part.reached
        merged.elapsed_s = max(merged.elapsed_s, part.elapsed_s)
        merged.health = merged.health.worst(part.health)
        merged.requests += part.requests
        merged.sessions += part.sessions
        merged.dropped += part.dropped
        merged.peak_users += part.peak_users
        # The stage ran from its first worker's start to its last one's end.
        merged.started_at = _nan_min(merged.started_at, part.started_at)
        merged.ended_at = -_nan_min(-merged.ended_at, -part.ended_at)
        if part.stopped_by == "max_requests":
            merged.stopped_by = "max_requests"
        merged.lost += part.lost
    merged.workers = sum(part.workers for part in parts)
    if targets is not None:
        merged.target, merged.description = targets
    return merged


@dataclass
class PlanResult:
    """Every stage of a plan, in order."""

    stages: list[StageResult]

    def encode(self) -> dict[str, Any]:
        return {"stages": [stage.encode() for stage in self.stages]}

    @classmethod
    def decode(cls, data: Mapping[str, Any]) -> PlanResult:
        return cls([StageResult.decode(stage) for stage in data["stages"]])


def merge_plans(parts: Iterable[PlanResult]) -> PlanResult:
    parts = list(parts)
    count = {len(part.stages) for part in parts}
    if len(count) != 1:
        raise ValueError(f"workers ran different numbers of stages: {sorted(count)}")
    return PlanResult(
        [merge_stages(stages) for stages in zip(*(p.stages for p in parts), strict=True)]
    )
