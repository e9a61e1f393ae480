"""What an executor is: where a load plan's virtual users run.

The engine (`pytest_apex.load`) measures; an executor decides where: in this process, in
local worker processes (`local`), or in actors spread over a Ray cluster (`ray_executor`).
Whatever runs them, the result is one `PlanResult` whose histograms were merged exactly,
judged once by the caller.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from pytest_apex.load.engine import EngineSettings, SessionFactory
from pytest_apex.load.progress import Writer
from pytest_apex.load.result import PlanResult
from pytest_apex.load.stages import Stage


class LoadExecutor(Protocol):
    """Runs every stage of a plan and returns the merged measurements.

    Raises the engine's `LoadTargetUnreachable` / `LoadPlanRefused`, or `ExecutorFailed`
    when the workers themselves could not be had; a worker lost during a stage is not an
    error but a stage marked `StageResult.lost` (judged inconclusive)."""

    def run(
        self,
        plan: Sequence[Stage],
        factory: SessionFactory,
        *,
        settings: EngineSettings,
        writer: Writer,
    ) -> PlanResult: ...


class ExecutorFailed(Exception):
    """The executor could not run the plan at all (its message names what to fix)."""
