"""Stacks left behind by runs that died: found by their owners' labels, removed, said why.

Only a stack whose labels prove it was started on this machine, by this user, in this pid
namespace, by a process that is gone (or whose pid now belongs to a younger process) is
removed. A stack without our labels, or from another host or CI container sharing the
engine, is never touched: its pid means nothing here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pytest_apex.targets.compose import PROJECT_LABEL, _text
from pytest_apex.targets.deadline import Deadline
from pytest_apex.targets.identity import LABEL_PREFIX, ProcessStartTime, RunIdentity
from pytest_apex.targets.projects import RUN_NAME, down_by_name
from pytest_apex.targets.runner import CommandRunner

_IDENTITY_LABELS = ("host", "boot", "pidns", "uid", "pid", "started", "run")
_REAP_BUDGET_S = 300.0


@dataclass(frozen=True)
class StaleStack:
    project: str
    reason: str


def labelled_stacks(runner: CommandRunner) -> dict[str, list[RunIdentity | None]]:
    """The identity each container carrying our labels claims, by compose project."""
    fields = [f'{{{{.Label "{PROJECT_LABEL}"}}}}']
    fields += [f'{{{{.Label "{LABEL_PREFIX}{name}"}}}}' for name in _IDENTITY_LABELS]
    result = runner(
        [
            "docker",
            "ps",
            "--all",
            "--filter",
            f"label={LABEL_PREFIX}run",
            "--format",
            "\t".join(fields),
        ],
        timeout=60,
    )
    if result.returncode != 0:
        return {}
    stacks: dict[str, list[RunIdentity | None]] = {}
    for line in _text(result.stdout).splitlines():
        project, *values = line.split("\t")
        labels = {f"{LABEL_PREFIX}{n}": v for n, v in zip(_IDENTITY_LABELS, values, strict=False)}
        if project:
            stacks.setdefault(project, []).append(RunIdentity.from_labels(labels))
    return stacks


def stale_projects(
    runner: CommandRunner, me: RunIdentity, start_time_of: ProcessStartTime
) -> list[StaleStack]:
    """Stacks of earlier runs of this plugin that provably belong to this host and are dead."""
    stale = []
    for project, owners in sorted(labelled_stacks(runner).items()):
        match = RUN_NAME.match(project)
        if not match or None in owners or len(set(owners)) != 1:
            continue  # not a run's stack, or its containers disagree on whose it is
        owner = owners[0]
        assert owner is not None
        if owner.run != project or owner.pid != int(match.group(1)):
            continue
        reason = me.why_dead(owner, start_time_of)
        if reason:
            stale.append(StaleStack(project, reason))
    return stale


def reap_stale(
    runner: CommandRunner,
    progress: Callable[[str], None],
    me: RunIdentity,
    start_time_of: ProcessStartTime,
    cwd: Path | None = None,
) -> list[str]:
    """Remove the stacks that dead runs of this host left behind, saying which and why."""
    stale = stale_projects(runner, me, start_time_of)
    deadline = Deadline(_REAP_BUDGET_S)
    for stack in stale:
        progress(f"removing stack {stack.project} left behind by a crashed run: {stack.reason}")
        down_by_name(runner, stack.project, cwd, deadline)
    return [stack.project for stack in stale]
