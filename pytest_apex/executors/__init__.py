"""Where a load plan's virtual users run: this machine (`LocalExecutor`) or a Ray cluster
(`RayExecutor`, the optional ``ray`` extra). Both return one exactly merged `PlanResult`."""

from pytest_apex.executors.base import ExecutorFailed, LoadExecutor
from pytest_apex.executors.local import LocalExecutor
from pytest_apex.executors.ray_executor import (
    RayClusterUnreachable,
    RayExecutor,
    RayNotInstalled,
    WorkerShares,
)
from pytest_apex.executors.shares import merge_shares

__all__ = [
    "ExecutorFailed",
    "LoadExecutor",
    "LocalExecutor",
    "RayClusterUnreachable",
    "RayExecutor",
    "RayNotInstalled",
    "WorkerShares",
    "merge_shares",
]
