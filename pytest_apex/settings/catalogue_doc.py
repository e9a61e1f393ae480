"""The README's option and threshold tables, rendered from the code's own catalogues.

`OPTIONS` (what `add_options` registers) and `THRESHOLDS` (the thresholds catalogue) are the
only sources: the README holds the rendered tables between marker comments, and a project test
(tests/plugin/test_readme_catalogue.py) fails when they differ. To regenerate::

    python -m pytest_apex.settings.catalogue_doc --write README.md

Without ``--write`` the sections are printed.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Final

from pytest_apex.settings.options import OPTIONS, ApexOption
from pytest_apex.settings.thresholds import PROFILES, THRESHOLDS, ThresholdSpec, ThresholdValue

REGENERATE: Final = "python -m pytest_apex.settings.catalogue_doc --write README.md"
SECTIONS: Final[tuple[str, ...]] = ("options", "thresholds")

_KIND_UNIT: Final[Mapping[str, str]] = {"ratio": "ratio", "count": "count", "number": ""}
_HUMANE: Final[tuple[tuple[float, str], ...]] = ((3600.0, "h"), (60.0, "min"))


def start_marker(section: str) -> str:
    return f"<!-- apex:{section}:start -->"


def end_marker(section: str) -> str:
    return f"<!-- apex:{section}:end -->"


def cell(text: str) -> str:
    """A table cell: one line, with `|` escaped (GitHub honours ``\\|`` in code spans too)."""
    return " ".join(text.split()).replace("|", "\\|")


def _row(cells: Iterable[str]) -> str:
    return "| " + " | ".join(cell(c) for c in cells) + " |"


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = [_row(header), "|" + "---|" * len(header), *(_row(r) for r in rows)]
    return "\n".join(lines)


def _sentence_join(first: str, second: str) -> str:
    return f"{first}; {second}" if first and second else first or second


# --- options ----------------------------------------------------------------------------------


def option_cell(option: ApexOption) -> str:
    """``--apex-profile ci|staging`` (``apex_profile``): the flag, its value and its ini twin."""
    metavar = option.shown_metavar
    flag = f"{option.flag} {metavar}" if metavar else option.flag
    return f"`{flag}` (`{option.ini}`)"


def option_default(option: ApexOption) -> str:
    if option.default:
        return option.default
    return "off" if option.ini_type == "bool" else "—"


def options_table(options: Sequence[ApexOption] = OPTIONS) -> str:
    """Every option with its ini twin, its default and what it means, in registration order."""
    rows = [(option_cell(o), option_default(o), _sentence_join(o.help, o.details)) for o in options]
    return _table(("option (ini twin)", "default", "meaning"), rows)


# --- thresholds -------------------------------------------------------------------------------


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def format_value(spec: ThresholdSpec, value: ThresholdValue) -> str:
    """A value as an override would spell it; ratios also in percent, durations of a minute
    and more also in minutes or hours."""
    if isinstance(value, tuple):
        return ", ".join(str(v) for v in value)
    text = _number(value)
    if spec.kind == "ratio":
        return f"{text} ({_number(round(value * 100, 6))} %)"
    if spec.kind == "seconds":
        for size, unit in _HUMANE:
            if value >= size and (value / size).is_integer():
                return f"{text} ({_number(value / size)} {unit})"
    return text


def threshold_unit(spec: ThresholdSpec) -> str:
    return spec.unit or _KIND_UNIT.get(spec.kind, "")


def threshold_judges(spec: ThresholdSpec) -> str:
    """How the threshold judges: ``p95 < threshold``, or "—" for one that shapes the run."""
    if spec.op is None:
        return "—"
    return f"`{spec.criterion}` {spec.op} threshold"


def thresholds_table(thresholds: Mapping[str, ThresholdSpec] = THRESHOLDS) -> str:
    """Every threshold in catalogue order: unit, default per profile, criterion, meaning."""
    rows = [
        (
            f"`{spec.name}`",
            threshold_unit(spec),
            *(format_value(spec, spec.default_for(profile)) for profile in PROFILES),
            threshold_judges(spec),
            spec.help,
        )
        for spec in thresholds.values()
    ]
    header = ("threshold", "unit", *(f"`{p}`" for p in PROFILES), "passes when", "meaning")
    return _table(header, rows)


# --- the README -------------------------------------------------------------------------------


def render(section: str) -> str:
    if section == "options":
        return options_table()
    if section == "thresholds":
        return thresholds_table()
    raise KeyError(f"unknown section {section!r}; known: {', '.join(SECTIONS)}")


def _section_pattern(section: str) -> re.Pattern[str]:
    return re.compile(
        re.escape(start_marker(section)) + r"\n(.*?)\n?" + re.escape(end_marker(section)),
        re.DOTALL,
    )


def read_section(text: str, section: str) -> str | None:
    """The text between a section's markers (None when the markers are missing)."""
    match = _section_pattern(section).search(text)
    return match.group(1) if match else None


def replace_sections(text: str, sections: Sequence[str] = SECTIONS) -> str:
    """`text` with every section's content between its markers regenerated.

    Raises ValueError naming the markers of a section that is missing or marked twice.
    """
    for section in sections:
        matches = list(_section_pattern(section).finditer(text))
        if len(matches) != 1:
            raise ValueError(
                f"expected one {start_marker(section)} ... {end_marker(section)} pair, "
                f"found {len(matches)}"
            )
        begin, end = matches[0].span()
        block = f"{start_marker(section)}\n{render(section)}\n{end_marker(section)}"
        text = text[:begin] + block + text[end:]
    return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pytest_apex.settings.catalogue_doc",
        description="Render the README's option and threshold tables from the code.",
    )
    parser.add_argument(
        "--write",
        metavar="README",
        type=Path,
        help="replace the marked sections of this file instead of printing them",
    )
    args = parser.parse_args(argv)
    if args.write is None:
        for section in SECTIONS:
            print(f"{start_marker(section)}\n{render(section)}\n{end_marker(section)}\n")
        return 0
    path: Path = args.write
    before = path.read_text(encoding="utf-8")
    try:
        after = replace_sections(before)
    except ValueError as exc:
        print(f"{path}: {exc}", file=sys.stderr)
        return 1
    if after != before:
        path.write_text(after, encoding="utf-8")
    print(f"{path}: {'updated' if after != before else 'up to date'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
