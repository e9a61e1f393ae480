"""Conventions of this repository that nothing else would catch."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_xdist_groups_take_effect() -> None:
    # `xdist_group` markers do nothing unless xdist distributes with --dist loadgroup: without
    # it, tests sharing one stack would be spread over workers that each start their own.
    grouped = [
        path.relative_to(ROOT)
        for path in (ROOT / "tests").rglob("test_*.py")
        if "xdist_group(" in path.read_text(encoding="utf-8")
    ]
    assert grouped, "no test uses xdist_group any more: drop --dist loadgroup too"
    ini = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    addopts = ini["tool"]["pytest"]["ini_options"]["addopts"]
    assert re.search(r"--dist[= ]loadgroup\b", addopts), (
        f"{', '.join(map(str, grouped))} use xdist_group, but addopts ({addopts!r}) does not "
        "set --dist loadgroup"
    )
