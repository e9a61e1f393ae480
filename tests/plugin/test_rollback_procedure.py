"""docs/rollback.md is the procedure the suite proves: its commands are the suite's own."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from pytest_apex.rollback.cli import PROGRAM, command_line, shown
from tests.conftest import ROOT

DOC = ROOT / "docs" / "rollback.md"
STACK = "fixtures/stack/docker-compose.staging.yml"


def _commands(text: str) -> list[str]:
    blocks = re.findall(r"```sh\n(.*?)```", text, flags=re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip()]


def test_the_documented_rollback_is_the_command_the_drill_runs() -> None:
    commands = _commands(DOC.read_text(encoding="utf-8"))
    rollback = [c for c in commands if c.startswith(PROGRAM)]
    # The page writes the project as a placeholder, which a shell would not take bare.
    ran = shown(command_line("PROJECT", [Path(STACK)], "v1")).replace("PROJECT", "<project>")
    assert rollback == [ran]


def test_make_rollback_runs_the_same_command() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    recipe = re.search(r"^rollback:\n\t(.+)$", makefile, flags=re.M)
    assert recipe is not None, "the Makefile has no rollback target"
    words = shlex.split(recipe.group(1))
    assert words[:3] == ["$(PY)", "-m", "pytest_apex.rollback"]
    assert words[3:] == command_line("$(PROJECT)", ["$(STACK)"], "$(TO)")
    assert "make rollback" in _commands(DOC.read_text(encoding="utf-8"))


def test_the_documented_verification_is_the_rollback_marker() -> None:
    assert "pytest -m rollback" in _commands(DOC.read_text(encoding="utf-8"))
