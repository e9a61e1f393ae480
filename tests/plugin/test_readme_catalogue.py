"""The README's option and threshold tables are the code's catalogues, rendered: no drift."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from pytest_apex import plugin
from pytest_apex.settings import THRESHOLDS
from pytest_apex.settings.catalogue_doc import (
    REGENERATE,
    SECTIONS,
    cell,
    main,
    options_table,
    read_section,
    render,
    replace_sections,
    thresholds_table,
)
from pytest_apex.settings.options import OPTIONS
from tests.plugin.conftest import ApexPytester

README = Path(__file__).resolve().parents[2] / "README.md"


class _RecordingParser:
    """What the plugin's pytest_addoption registers: every flag and ini key, nothing parsed."""

    def __init__(self) -> None:
        self.flags: dict[str, dict[str, Any]] = {}
        self.ini: dict[str, dict[str, Any]] = {}

    def getgroup(self, name: str, description: str = "") -> _RecordingParser:
        return self

    def addoption(self, *opts: str, **attrs: Any) -> None:
        for flag in opts:
            self.flags[flag] = attrs

    def addini(self, name: str, help: str, type: str | None = None, **kw: Any) -> None:
        self.ini[name] = {"help": help, "type": type, **kw}


@pytest.fixture(scope="module")
def registered() -> _RecordingParser:
    parser = _RecordingParser()
    plugin.pytest_addoption(parser)  # type: ignore[arg-type]
    return parser


@pytest.mark.parametrize("section", SECTIONS)
def test_the_readme_section_is_the_generated_table(section: str) -> None:
    text = README.read_text(encoding="utf-8")
    found = read_section(text, section)
    assert found is not None, (
        f"README.md lacks <!-- apex:{section}:start --> ... <!-- apex:{section}:end -->"
    )
    assert found == render(section), (
        f"README.md's {section} table differs from the code's catalogue; regenerate it with "
        f"`{REGENERATE}`"
    )


def test_every_registered_option_and_ini_key_is_in_the_table(
    registered: _RecordingParser,
) -> None:
    table = options_table()
    apex_flags = {f for f in registered.flags if f.startswith("--apex-")}
    assert apex_flags == {o.flag for o in OPTIONS}, "an option registered outside OPTIONS"
    for flag in apex_flags:
        assert re.search(rf"`{re.escape(flag)}[ `]", table), f"{flag} is not in the table"
    for name in registered.ini:
        assert f"(`{name}`)" in table, f"ini key {name} is not in the table"


def test_the_registration_is_the_catalogue(registered: _RecordingParser) -> None:
    # The table describes what is registered: dest, action and value name come from OPTIONS.
    for option in OPTIONS:
        attrs = registered.flags[option.flag]
        assert attrs["dest"] == option.ini
        assert attrs["default"] is None
        assert attrs["action"] == option.action
        assert attrs.get("metavar") == option.shown_metavar
        assert registered.ini[option.ini]["type"] == option.ini_type


def test_help_lists_no_apex_option_the_table_lacks(apex: ApexPytester) -> None:
    # Whatever registers an --apex-* option or an apex_* ini key (not only add_options), the
    # help of a real run shows it: it must be in the README's table too.
    result = apex.run("--help")
    assert result.ret == 0
    out = result.stdout.str()
    table = options_table()
    flags = set(re.findall(r"(--apex-[a-z0-9-]+)", out))
    ini_keys = set(re.findall(r"^\s+(apex_[a-z0-9_]+) \(", out, re.MULTILINE))
    assert flags >= {o.flag for o in OPTIONS}
    assert ini_keys >= {o.ini for o in OPTIONS}
    assert {f for f in flags if f"`{f} " not in table and f"`{f}`" not in table} == set()
    assert {k for k in ini_keys if f"(`{k}`)" not in table} == set()


def test_every_threshold_is_in_the_table() -> None:
    table = thresholds_table()
    rows = table.splitlines()[2:]
    assert len(rows) == len(THRESHOLDS)
    for row, name in zip(rows, THRESHOLDS, strict=True):
        assert row.startswith(f"| `{name}` |"), f"{name}: its row is missing or out of order"


def test_the_staging_column_shows_the_staging_value() -> None:
    table = thresholds_table()
    assert "| `stage_duration_s` | s | 20 | 3600 (1 h) |" in table
    assert "| `availability_min` | ratio | 0.999 (99.9 %) | 0.999 (99.9 %) |" in table
    assert "| `load_stages` | users | 10, 25, 50, 100, 150 | 10, 25, 50, 100, 150 |" in table


def test_cells_escape_pipes_and_stay_on_one_line() -> None:
    assert cell("`fail|pass` and\n  more") == "`fail\\|pass` and more"
    for section in SECTIONS:
        for line in render(section).splitlines()[2:]:
            unescaped = re.sub(r"\\\|", "", line)
            assert unescaped.count("|") == render(section).splitlines()[1].count("|")


def test_write_replaces_only_the_marked_sections(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(
        "# x\n\nbefore\n<!-- apex:options:start -->\nstale\n<!-- apex:options:end -->\n"
        "middle\n<!-- apex:thresholds:start -->\n<!-- apex:thresholds:end -->\nafter\n",
        encoding="utf-8",
    )
    assert main(["--write", str(readme)]) == 0
    text = readme.read_text(encoding="utf-8")
    assert "stale" not in text
    assert text.startswith("# x\n\nbefore\n<!-- apex:options:start -->\n| option")
    assert "<!-- apex:options:end -->\nmiddle\n" in text
    assert text.endswith("<!-- apex:thresholds:end -->\nafter\n")
    assert read_section(text, "options") == options_table()
    assert replace_sections(text) == text  # idempotent


def test_write_refuses_a_file_without_the_markers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# x\n<!-- apex:options:start -->\n<!-- apex:options:end -->\n")
    assert main(["--write", str(readme)]) == 1
    assert "apex:thresholds:start" in capsys.readouterr().err
    assert readme.read_text() == "# x\n<!-- apex:options:start -->\n<!-- apex:options:end -->\n"


def test_without_write_it_prints_the_sections(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    out = capsys.readouterr().out
    for section in SECTIONS:
        assert f"<!-- apex:{section}:start -->\n{render(section)}\n" in out
