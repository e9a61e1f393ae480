"""Compose projects by name: how runs name them, find kept ones, label and remove them."""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pytest_apex.targets.compose import _objects, _text, project_containers
from pytest_apex.targets.deadline import Deadline
from pytest_apex.targets.runner import CommandRunner

RUN_PREFIX = "apexrun"
KEEP_PREFIX = "apexkeep"
RUN_NAME = re.compile(rf"^{RUN_PREFIX}-(\d+)-[0-9a-f]+$")
_DOWN_TIMEOUT_S = 300.0


def new_project_name(keep: bool = False, pid: int | None = None) -> str:
    """A compose project name unique to this run.

    `apexrun-<pid>-<random>` names the process that owns the stack, for people; which
    stack is whose, for the reaper, is in its labels (`identity`). Kept stacks
    (`apexkeep-<time>-<random>`) are never reaped; the hex start time makes the newest
    one sort last, for --apex-reuse.
    """
    if keep:
        return f"{KEEP_PREFIX}-{int(time.time()):08x}-{secrets.token_hex(2)}"
    return f"{RUN_PREFIX}-{pid or os.getpid()}-{secrets.token_hex(3)}"


def kept_project_for(compose_file: Path, runner: CommandRunner) -> str | None:
    """The newest running kept stack of this compose file, for --apex-reuse."""
    result = runner(["docker", "compose", "ls", "--format", "json"], timeout=60)
    if result.returncode != 0:
        return None
    wanted = str(compose_file.resolve())
    candidates = [
        str(p["Name"])
        for p in _listing(_text(result.stdout))
        if str(p.get("Name", "")).startswith(f"{KEEP_PREFIX}-")
        and wanted in str(p.get("ConfigFiles", "")).split(",")
        and "running" in str(p.get("Status", ""))
    ]
    return sorted(candidates)[-1] if candidates else None


def _listing(text: str) -> list[dict[str, Any]]:
    """The projects `docker compose ls --format json` printed (one JSON array); none when
    it printed something else."""
    try:
        return _objects(json.loads(text)) if text.strip() else []
    except json.JSONDecodeError:
        return []


def label_override(services: Sequence[str], labels: Mapping[str, str]) -> str:
    """A compose override file that puts `labels` on every service's containers.

    Compose has no command-line flag for labels; a second `-f` file merges them into the
    user's own file untouched. JSON is YAML, so no YAML writer is needed.
    """
    return json.dumps({"services": {s: {"labels": dict(labels)} for s in services}}, indent=2)


def removal_command(project: str) -> str:
    """The command a person runs to remove a stack this run could not."""
    return f"docker compose -p {project} down --volumes --remove-orphans"


def down_by_name(
    runner: CommandRunner, project: str, cwd: Path | None = None, deadline: Deadline | None = None
) -> None:
    """`docker compose -p NAME down` (no compose file needed), then remove any straggler.

    By name only, because the compose file may have changed or gone since the stack was
    started. `cwd` should hold no compose file: compose would read one there. Every
    command is cut off when `deadline` passes (`CommandTimedOut`).
    """
    deadline = deadline or Deadline(2 * _DOWN_TIMEOUT_S)
    runner(
        [
            "docker",
            "compose",
            "--project-name",
            project,
            "down",
            "--volumes",
            "--remove-orphans",
            "--timeout",
            "5",
        ],
        cwd=str(cwd) if cwd else None,
        timeout=deadline.timeout(_DOWN_TIMEOUT_S),
    )
    leftover = project_containers(runner, project, deadline.timeout(60))
    if leftover:
        runner(["docker", "rm", "--force", "--volumes", *leftover], timeout=deadline.timeout(120))
