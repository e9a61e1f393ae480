"""``python -m pytest_apex.summary``: the JSON verdict as Markdown, for any CI's job summary.

    python -m pytest_apex.summary [REPORT] [--output FILE] [--fail-unless-pass]

It reads REPORT (default ``.apex/report.json``, what ``--apex-report`` writes), checks it
against ``report.schema.json`` and writes the Markdown of `pytest_apex.reporting.summary`
to stdout, or appends it to FILE (``--output "$GITHUB_STEP_SUMMARY"`` on GitHub Actions).

Exit 0 when the summary was written; 1 with ``--fail-unless-pass`` when the verdict is not
``pass`` (the summary is still written first); 2 when the report is missing or invalid (the
message names the file and what to do; with ``--output`` a short note says so there too) or
the output file cannot be appended to.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import jsonschema

from pytest_apex.criteria import report_schema
from pytest_apex.reporting.summary import render_markdown, render_no_report

PROGRAM: Final = "python -m pytest_apex.summary"
DEFAULT_REPORT: Final = Path(".apex/report.json")
EXIT_OK, EXIT_NOT_PASS, EXIT_ERROR = 0, 1, 2
MAX_SHOWN_ERRORS: Final = 5


class ReportError(Exception):
    """The report cannot be summarised; the message names the file and what to do."""


def load_report(path: Path) -> dict[str, Any]:
    """The report at `path`, checked against the schema the package ships."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ReportError(
            f"no report at {path}: run the suites first (e.g. `pytest -m health`, or "
            "`tox -e staging`), which write it even when they fail, or name the report's "
            "path (the run's --apex-report)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ReportError(f"cannot read the report {path}: {exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReportError(
            f"{path} is not JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}), so "
            "pytest-apex did not write it (its reports are written whole): run the suites "
            "again, or name the right file"
        ) from None
    schema = report_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        shown = "\n".join(
            f"  {'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in errors[:MAX_SHOWN_ERRORS]
        )
        more = len(errors) - MAX_SHOWN_ERRORS
        shown += f"\n  ... and {more} more" if more > 0 else ""
        raise ReportError(
            f"{path} is not a pytest-apex report (schema {schema['properties']['schema']['const']}"
            f", pytest_apex/report.schema.json):\n{shown}\n"
            "write it again with this version of pytest-apex"
        )
    # The schema's root is an object, so this is the dict it describes.
    return dict(data)


def _append(path: Path, text: str) -> None:
    """Append `text` to `path`, a blank line after what is there (GitHub's summary file)."""
    with path.open("a+", encoding="utf-8") as handle:
        if handle.tell() > 0:
            text = "\n" + text
        handle.write(text)


def _emit(text: str, output: Path | None) -> bool:
    """Write `text` out; False (with a message) when the output file cannot take it."""
    if output is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return True
    try:
        _append(output, text)
    except OSError as exc:
        print(f"{PROGRAM}: cannot append the summary to {output}: {exc}", file=sys.stderr)
        return False
    return True


def parser() -> argparse.ArgumentParser:
    parse = argparse.ArgumentParser(
        prog=PROGRAM,
        description="Render pytest-apex's JSON verdict as Markdown for a CI job summary.",
    )
    parse.add_argument(
        "report",
        nargs="?",
        type=Path,
        default=DEFAULT_REPORT,
        help=f"the JSON verdict (default: {DEFAULT_REPORT})",
    )
    parse.add_argument(
        "--output",
        type=Path,
        metavar="FILE",
        help='append the Markdown to FILE (e.g. "$GITHUB_STEP_SUMMARY"); default: stdout',
    )
    parse.add_argument(
        "--fail-unless-pass",
        action="store_true",
        help="exit 1 when the verdict is not pass (after writing the summary)",
    )
    return parse


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    report_path: Path = args.report
    output: Path | None = args.output
    try:
        report = load_report(report_path)
    except ReportError as exc:
        print(f"{PROGRAM}: {exc}", file=sys.stderr)
        if output is not None:
            # The job summary says so too, rather than showing nothing at all.
            _emit(render_no_report(str(exc)), output)
        return EXIT_ERROR
    if not _emit(render_markdown(report, source=str(report_path)), output):
        return EXIT_ERROR
    if args.fail_unless_pass and report["verdict"] != "pass":
        print(f"{PROGRAM}: the verdict is {report['verdict']}, not pass", file=sys.stderr)
        return EXIT_NOT_PASS
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
