"""The JSON verdict as GitHub-flavoured Markdown, for a CI job summary.

`render_markdown` turns a report (the dict ``report.schema.json`` describes) into a headline
with the verdict and the criteria counts, the reasons the verdict is not a pass, then one
table per suite: failures first, then inconclusives, then passes, each row with its observed
value, threshold and comparison, unit, stage (where any criterion of the suite has one) and
why it is not a pass (what a failure observed, why an inconclusive one could not be judged).
It renders only what the report holds: the report is redacted when written, and nothing else
(no environment) is added.

``python -m pytest_apex.summary`` (`pytest_apex.summary`) reads the file and writes this out.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from pytest_apex.criteria import NEGATED_OPS, Outcome, format_number
from pytest_apex.reporting.terminal import UNICODE_MARKS

OUTCOMES: Final[tuple[Outcome, ...]] = ("fail", "inconclusive", "pass")  # the rows' order
NO_VALUE: Final = "—"  # observed or threshold null: nothing was measured / nothing to compare
MAX_CELL: Final = 1000  # characters of one cell; the JSON report keeps the whole text
TITLE: Final = "pytest-apex"

# GFM reads `<` followed by a letter, `/`, `!` or `?` as the start of raw HTML; `<=` and
# `< 2.00` stay as they are, readable in the raw text too.
_TAG_START: Final = re.compile(r"<(?=[A-Za-z/!?])")
_NEWLINES: Final = re.compile(r"\r\n|\r|\n")


def escape_cell(text: str) -> str:
    """`text` safe inside one GFM table cell: ``|`` escaped, newlines as ``<br>``."""
    if len(text) > MAX_CELL:
        text = text[: MAX_CELL - 1] + "…"
    text = _TAG_START.sub("&lt;", text).replace("|", "\\|")
    return _NEWLINES.sub("<br>", text.strip())


def _inline(text: str) -> str:
    """`text` on one Markdown line (a list item, a heading), tags defused."""
    return _NEWLINES.sub("<br>", _TAG_START.sub("&lt;", text.strip()))


def _code(text: str) -> str:
    """`text` as inline code, whatever backticks it holds."""
    text = _NEWLINES.sub(" ", text)
    fence = "`" * (max((len(m) for m in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _number(value: Any) -> str:
    if value is None:
        return NO_VALUE
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    return format_number(value)


def _as_outcome(value: Any) -> Outcome:
    """`value` as an outcome; anything else reads as inconclusive (never as a pass)."""
    for outcome in OUTCOMES:
        if value == outcome:
            return outcome
    return "inconclusive"


def _outcome(criterion: Mapping[str, Any]) -> Outcome:
    return _as_outcome(criterion.get("outcome"))


def _stage(stage: Any) -> str:
    if not isinstance(stage, Mapping):
        return ""
    return f"{stage.get('index')}/{stage.get('count')} ({stage.get('users')} users)"


def _with_unit(value: Any, unit: str) -> str:
    number = _number(value)
    return f"{number} {unit}" if unit and value is not None else number


def _why(criterion: Mapping[str, Any]) -> str:
    """A failure's observation (``2.41 s >= 2.00 s``), an inconclusive's reason, else ""."""
    outcome = _outcome(criterion)
    if outcome == "inconclusive":
        return str(criterion.get("reason") or "")
    if outcome == "fail":
        unit, op = str(criterion.get("unit") or ""), str(criterion.get("op", ""))
        return (
            f"{_with_unit(criterion.get('observed'), unit)} {NEGATED_OPS.get(op, 'not ' + op)} "
            f"{_with_unit(criterion.get('threshold'), unit)}"
        )
    return ""


def _counts_text(counts: Mapping[Outcome, int]) -> str:
    return (
        f"{counts['pass']} passed, {counts['fail']} failed, {counts['inconclusive']} inconclusive"
    )


def _outcome_counts(criteria: Iterable[Mapping[str, Any]]) -> dict[Outcome, int]:
    counts: dict[Outcome, int] = dict.fromkeys(OUTCOMES, 0)
    for criterion in criteria:
        counts[_outcome(criterion)] += 1
    return counts


def _by_suite(criteria: Iterable[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """Criteria grouped by suite, suites in the report's order (the canonical one)."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for criterion in criteria:
        groups.setdefault(str(criterion.get("suite", "")), []).append(criterion)
    return groups


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _suite_table(criteria: Sequence[Mapping[str, Any]]) -> list[str]:
    # Failures first, then inconclusives, then passes; recorded order within each.
    ordered = sorted(criteria, key=lambda c: OUTCOMES.index(_outcome(c)))
    with_stage = any(_stage(c.get("stage")) for c in ordered)
    with_why = any(_why(c) for c in ordered)
    header = ["outcome", "criterion", "observed", "threshold", "unit"]
    align = [":---", ":---", "---:", "---:", ":---"]
    if with_stage:
        header.append("stage")
        align.append(":---")
    if with_why:
        header.append("why")
        align.append(":---")
    lines = [_row(header), _row(align)]
    for criterion in ordered:
        outcome = _outcome(criterion)
        cells = [
            f"{UNICODE_MARKS[outcome]} {outcome}",
            escape_cell(str(criterion.get("name", ""))),
            escape_cell(_number(criterion.get("observed"))),
            escape_cell(f"{criterion.get('op', '')} {_number(criterion.get('threshold'))}"),
            escape_cell(str(criterion.get("unit") or "")),
        ]
        if with_stage:
            cells.append(escape_cell(_stage(criterion.get("stage"))))
        if with_why:
            cells.append(escape_cell(_why(criterion)))
        lines.append(_row(cells))
    return lines


def _context(report: Mapping[str, Any]) -> str:
    """The run's context line: pytest's outcomes, profile, target, topology, faults."""
    parts: list[str] = []
    tests = report.get("counts")
    if isinstance(tests, Mapping) and tests:
        parts.append("tests: " + ", ".join(f"{n} {k}" for k, n in sorted(tests.items())))
    for key in ("profile", "target", "topology"):
        if report.get(key):
            parts.append(f"{key} {_code(str(report[key]))}")
    faults = report.get("faults")
    if isinstance(faults, list) and faults:
        parts.append("faults " + ", ".join(_code(str(f)) for f in faults))
    return " · ".join(parts)


def render_markdown(report: Mapping[str, Any], *, source: str | None = None) -> str:
    """The report as Markdown, ending in a newline; `source` (the report's path) is named last.

    A pure function of the report: it reads no file and no environment.
    """
    verdict = _as_outcome(report.get("verdict"))
    mark = UNICODE_MARKS[verdict]
    criteria = [c for c in report.get("criteria") or [] if isinstance(c, Mapping)]
    counts = _outcome_counts(criteria)
    lines = [
        f"## {mark} {TITLE} verdict: {verdict.upper()}",
        "",
        f"**{len(criteria)} criteria: {_counts_text(counts)}**",
    ]
    context = _context(report)
    if context:
        lines += ["", context]
    reasons = [str(r) for r in report.get("reasons") or []]
    if reasons:
        lines += ["", "Why it is not a pass:", ""]
        lines += [f"- {_inline(reason)}" for reason in reasons]
    groups = _by_suite(criteria)
    for suite, suite_criteria in groups.items():
        lines += ["", f"### {_inline(suite)}: {_counts_text(_outcome_counts(suite_criteria))}"]
        lines += ["", *_suite_table(suite_criteria)]
    if not groups:
        lines += ["", "No criterion was recorded."]
    if source:
        lines += ["", f"Full report: {_code(source)}"]
    return "\n".join(lines) + "\n"


def render_no_report(problem: str) -> str:
    """The summary of a run that left no readable report: `problem` says which and why (its
    first line as text, the rest, e.g. schema violations, as a code block)."""
    first, _, rest = problem.strip().partition("\n")
    text = f"## ? {TITLE}: no verdict\n\n{_inline(first)}\n"
    if rest.strip():
        fence = "`" * max(3, max((len(m) for m in re.findall(r"`+", rest)), default=0) + 1)
        text += f"\n{fence}text\n{rest.rstrip()}\n{fence}\n"
    return text
