"""The run's state on disk: a private per-user directory, and the state file in it.

The process that starts the stack writes what everyone else of the run needs (the project,
how the start went, where its watchdog listens); xdist workers and the controller read it.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NoReturn

from pytest_apex.targets.errors import DockerUnavailable, StackStartError


def state_root() -> Path:
    """This user's directory for the state of runs: `<tmp>/pytest-apex-<uid>`.

    Per user, because what is in it decides which compose project a run tears down: in a
    directory shared between users, another local user could plant a state file (or a
    symlink) and have our run remove their choice of stack.
    """
    return Path(tempfile.gettempdir()) / f"pytest-apex-{os.getuid()}"


def private_dir(path: Path, *, create: bool) -> bool:
    """Whether `path` exists, after making sure that only this user can write to it.

    Created with mode 0700 when `create` is set. Raises `StackStartError` when it is not
    a directory of ours that nobody else can write to: it is refused, not repaired, since
    whoever could write to it may already have put something in it.
    """
    if create:
        with contextlib.suppress(FileExistsError):
            path.mkdir(mode=0o700, parents=False)
    try:
        info = path.lstat()  # lstat: a symlink planted in its place is refused, not followed
    except FileNotFoundError:
        return False
    if not stat.S_ISDIR(info.st_mode):
        problem = "is not a directory (a symlink?)"
    elif info.st_uid != os.getuid():
        problem = f"is owned by uid {info.st_uid}, not by you (uid {os.getuid()})"
    elif info.st_mode & 0o022:
        problem = f"is writable by other users (mode {stat.S_IMODE(info.st_mode):o})"
    else:
        return True
    raise StackStartError(
        f"refusing to use the state directory {path}: it {problem}. Whoever can write to it "
        "can choose the stack this run tears down. Remove it (or make it yours with mode "
        "0700) and rerun."
    )


@dataclass
class RunState:
    """What the process that started the stack tells everyone else.

    Written to `state.json` in the run's state directory: "starting" before `up`, so an
    interrupted start is still torn down; then "up", or "failed" with the error, so other
    workers fail fast with the same message instead of starting again.
    """

    status: str  # "starting" | "up" | "failed"
    project: str
    reused: bool = False
    error: str = ""
    error_kind: str = ""  # "DockerUnavailable" or "StackStartError"
    watchdog_port: int = 0  # 0: no watchdog guards the stack
    watchdog_host: str = ""

    @classmethod
    def read(cls, path: Path) -> RunState | None:
        try:
            return cls(**json.loads(path.read_text()))
        except (FileNotFoundError, json.JSONDecodeError, TypeError):
            return None

    def write(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self)))
        tmp.replace(path)

    def raise_error(self) -> NoReturn:
        if self.status == "starting":
            raise StackStartError(
                f"the start of stack {self.project} was interrupted (the process starting it "
                "died); it is removed at the end of this run. Rerun the tests."
            )
        if self.error_kind == "DockerUnavailable":
            raise DockerUnavailable(self.error)
        raise StackStartError(self.error)
