"""The local executor: this process, or `workers` processes of this machine."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pytest_apex.executors.base import ExecutorFailed
from pytest_apex.load.engine import EngineSettings, SessionFactory, run
from pytest_apex.load.progress import Writer
from pytest_apex.load.result import PlanResult
from pytest_apex.load.stages import Stage
from pytest_apex.load.workers import LoadWorkerFailed, run_workers


@dataclass(frozen=True)
class LocalExecutor:
    workers: int = 1

    def run(
        self,
        plan: Sequence[Stage],
        factory: SessionFactory,
        *,
        settings: EngineSettings,
        writer: Writer,
    ) -> PlanResult:
        if self.workers == 1:
            return run(plan, factory, settings=settings, writer=writer)
        try:
            return run_workers(plan, factory, self.workers, settings=settings, writer=writer)
        except LoadWorkerFailed as exc:
            raise ExecutorFailed(str(exc)) from exc
