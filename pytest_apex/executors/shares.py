"""Putting a stage back together from its workers' shares, some of which may be missing.

A worker lost mid-run delivered the stages before it died and nothing after; each stage it
did not deliver is merged from the others and carries why (`StageResult.lost`), so the
verdict calls it inconclusive instead of judging a smaller load as if it were the whole.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from pytest_apex.load.generator import GeneratorHealth
from pytest_apex.load.result import PlanResult, StageResult, merge_stages
from pytest_apex.load.stages import OpenStage, Stage


def _nothing_measured(stage: Stage, index: int, count: int, window_s: float) -> StageResult:
    return StageResult(
        index=index,
        count=count,
        model="open" if isinstance(stage, OpenStage) else "closed",
        description=stage.describe(),
        target=stage.target,
        reached=0,
        duration_s=stage.duration_s,
        elapsed_s=0.0,
        window_s=window_s,
        health=GeneratorHealth(math.nan, math.nan, math.nan, 0),
        workers=0,
    )


def merge_shares(
    plan: Sequence[Stage],
    delivered: Mapping[int, Sequence[StageResult]],
    lost: Mapping[int, str],
    window_s: float,
) -> PlanResult:
    """Worker -> the stages it delivered (in order), and worker -> why it stopped
    delivering (its node, say): every stage of `plan`, merged exactly from what arrived."""
    merged = []
    for index, stage in enumerate(plan, start=1):
        parts = [stages[index - 1] for stages in delivered.values() if len(stages) >= index]
        missing = sorted(w for w, stages in delivered.items() if len(stages) < index)
        if parts:
            result = merge_stages(parts, targets=(stage.target, stage.describe()))
        else:
            result = _nothing_measured(stage, index, len(plan), window_s)
        reasons = []
        for worker in missing:
            why = lost.get(worker, f"load worker {worker} gave no result")
            when = "during" if len(delivered[worker]) == index - 1 else "before"
            reasons.append(f"{why} ({when} this stage)")
        result.lost = tuple(reasons)
        merged.append(result)
    return PlanResult(merged)
