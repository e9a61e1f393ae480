"""A path option given with a space can make pytest choose the wrong rootdir: say so.

pytest chooses its rootdir and ini file before it loads plugins, so at that moment it does not
know ``--apex-stack`` takes a value: in ``--apex-stack ../app/compose.yml`` it reads the path
as a test path, and when that path lies outside the project the rootdir moves to a common
ancestor where no ini file is found. The project's settings (asyncio mode, markers, every
``apex_*`` key) are then silently dropped. ``--apex-stack=PATH`` is read correctly. pytest
offers no way to change that choice afterwards, so the run stops with the fix.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Final

# The plugin's options whose value is a path (pytest would take it for a test path).
PATH_OPTIONS: Final[tuple[str, ...]] = (
    "--apex-stack",
    "--apex-report",
    "--apex-app",
    "--apex-decision-matrix",
)


def spaced_path_options(args: Sequence[str]) -> list[tuple[str, str]]:
    """(option, value) for every path option written as two arguments, in order."""
    return [
        (arg, args[i + 1])
        for i, arg in enumerate(args[:-1])
        if arg in PATH_OPTIONS and not args[i + 1].startswith("-")
    ]


def misread_rootdir(
    args: Sequence[str], invocation_dir: Path, inipath: Path | None, rootpath: Path
) -> str:
    """Why the rootdir pytest chose cannot be trusted ("" when it can), with the fix.

    Only an ini file in the invocation directory or above it is the project's own; with a
    spaced path option and no such ini file in use, the path has moved the rootdir.
    """
    spaced = spaced_path_options(args)
    if not spaced:
        return ""
    own_dirs = (invocation_dir, *invocation_dir.parents)
    if inipath is not None and inipath.parent in own_dirs:
        return ""
    written = " ".join(f"{option}={value}" for option, value in spaced)
    return (
        f"apex: {' '.join(f'{o} {v}' for o, v in spaced)}: pytest read the path after the "
        f"space as a test path when it chose its rootdir ({rootpath}, "
        f"{'no ini file' if inipath is None else f'ini file {inipath}'}), so the project's "
        f"settings may not have been read. Write it with '=': {written}"
    )
