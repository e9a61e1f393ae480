"""The JSON verdict as a CI job summary: `render_markdown` and `python -m pytest_apex.summary`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pytest_apex.criteria import Criterion, Stage, Verdict
from pytest_apex.reporting.summary import escape_cell, render_markdown
from pytest_apex.summary import main
from tests.report_schema import assert_valid_report

ROOT = Path(__file__).resolve().parents[2]
NAN = float("nan")

HEALTH_OK = Criterion("health", "liveness backend", 1, 1, "==")
HEALTH_FAST = Criterion("health", "health response p95", 0.0123, 0.5, "<", "s")
P95_MISSED = Criterion("load", "p95", 2.41, 2.0, "<", "s", stage=Stage(5, 5, 150))
P95_MET = Criterion("load", "p95", 0.04, 2.0, "<", "s", stage=Stage(1, 5, 10))
NOT_OBSERVED = Criterion("load", "error_rate", NAN, 0.01, "<", stage=Stage(2, 5, 25))
CONTROL_FAILED = Criterion(
    "isolation", "cross_user_events", 0, 0, "<=", inconclusive="the users' own events never came"
)


def report(*criteria: Criterion, **changes: Any) -> dict[str, Any]:
    """A report as the plugin writes it (from its own model), checked against the schema."""
    verdict = Verdict(profile="ci", target="compose:apexrun-1-abc", counts={"passed": 3})
    verdict.extend(criteria)
    for criterion in criteria:
        verdict.note_suite_run(criterion.suite)
    verdict.extra.update({"thresholds": {"p95_s_max": 2.0}, "faults": [], "topology": None})
    data = verdict.to_json()
    data.update(changes)
    return assert_valid_report(data)


def cells(row: str) -> list[str]:
    """A Markdown table row's cells, split on the pipes that are not escaped."""
    assert row.startswith("| "), row
    assert row.endswith(" |"), row
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", row[1:-1])]


def table(markdown: str, suite: str) -> list[list[str]]:
    """The rows (header first, no separator) of `suite`'s table."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"### {suite}: "))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append(line)
    header, separator, *body = rows
    assert set(separator) <= set("|:- "), separator
    return [cells(header), *map(cells, body)]


def write(path: Path, data: dict[str, Any] | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path


# --- rendering ---------------------------------------------------------------------------


def test_a_pass_has_the_verdict_and_counts_in_its_headline_and_a_table_per_suite() -> None:
    markdown = render_markdown(report(HEALTH_OK, HEALTH_FAST, P95_MET))
    lines = markdown.splitlines()
    assert lines[0] == "## ✓ pytest-apex verdict: PASS"
    assert lines[2] == "**3 criteria: 3 passed, 0 failed, 0 inconclusive**"
    assert "tests: 3 passed · profile `ci` · target `compose:apexrun-1-abc`" in markdown
    assert "Why it is not a pass" not in markdown
    assert table(markdown, "health") == [
        ["outcome", "criterion", "observed", "threshold", "unit"],
        ["✓ pass", "liveness backend", "1", "== 1", ""],
        ["✓ pass", "health response p95", "0.0123", "< 0.500", "s"],
    ]
    assert "### load: 1 passed, 0 failed, 0 inconclusive" in markdown
    assert table(markdown, "load")[0][-1] == "stage"  # a stage column only where there are
    assert markdown.endswith("|\n")  # one newline after the last table row


def test_a_failure_comes_first_in_its_table_with_what_was_observed_and_the_reasons() -> None:
    markdown = render_markdown(report(P95_MET, P95_MISSED, HEALTH_OK))
    assert markdown.startswith("## ✗ pytest-apex verdict: FAIL\n")
    assert "**3 criteria: 2 passed, 1 failed, 0 inconclusive**" in markdown
    assert (
        "Why it is not a pass:\n\n- failed: load p95 2.41 s >= 2.00 s at 150 users (stage 5/5)\n"
        in markdown
    )
    assert table(markdown, "load") == [
        ["outcome", "criterion", "observed", "threshold", "unit", "stage", "why"],
        ["✗ fail", "p95", "2.41", "< 2.00", "s", "5/5 (150 users)", "2.41 s >= 2.00 s"],
        ["✓ pass", "p95", "0.0400", "< 2.00", "s", "1/5 (10 users)", ""],
    ]
    # Suites in the report's order (the canonical one), each with its own counts.
    assert markdown.index("### health: 1 passed") < markdown.index("### load: 1 passed, 1 failed")


def test_inconclusive_rows_say_why_and_the_reasons_name_inconclusive_tests() -> None:
    data = report(HEALTH_OK, CONTROL_FAILED)
    data["inconclusive_tests"] = [{"test": "tests/x.py::test_y", "reason": "redis was down"}]
    data["reasons"] = Verdict.from_json(data).reasons
    markdown = render_markdown(assert_valid_report(data))
    assert markdown.startswith("## ? pytest-apex verdict: INCONCLUSIVE\n")
    assert "**2 criteria: 1 passed, 0 failed, 1 inconclusive**" in markdown
    assert "- inconclusive test tests/x.py::test_y: redis was down" in markdown
    assert table(markdown, "isolation")[1] == [
        "? inconclusive",
        "cross_user_events",
        "0",
        "<= 0",
        "",
        "the users' own events never came",
    ]


def test_nothing_observed_shows_no_value_and_reads_inconclusive() -> None:
    markdown = render_markdown(report(NOT_OBSERVED, P95_MET))
    data = report(NOT_OBSERVED)
    assert data["criteria"][0]["observed"] is None
    failed, passed = table(markdown, "load")[1:]
    assert failed[:4] == ["? inconclusive", "error_rate", "—", "< 0.0100"]
    assert failed[-1] == "nothing was observed (the value is missing or NaN)"
    assert passed[0] == "✓ pass"
    # A null threshold too (a criterion with nothing to compare with).
    no_threshold = report(Criterion("health", "config", 1, NAN, "=="))
    assert table(render_markdown(no_threshold), "health")[1][3] == "== —"


def test_pipes_and_newlines_in_cells_cannot_break_the_table() -> None:
    odd = Criterion(
        "isolation",
        "rows | by owner",
        0,
        0,
        "<=",
        inconclusive="query failed:\nERROR | relation <missing>\r\nsee the log",
    )
    markdown = render_markdown(report(odd))
    header, row = table(markdown, "isolation")
    assert len(row) == len(header)
    assert row[1] == "rows \\| by owner"
    assert row[-1] == "query failed:<br>ERROR \\| relation &lt;missing><br>see the log"
    # The reasons list keeps each reason on its one line too.
    [reason] = [line for line in markdown.splitlines() if line.startswith("- ")]
    assert reason.endswith("query failed:<br>ERROR | relation &lt;missing><br>see the log")


def test_escape_cell_keeps_comparisons_and_caps_long_text() -> None:
    assert escape_cell("<= 2 and < 3") == "<= 2 and < 3"
    assert escape_cell("a\nb\rc|d") == "a<br>b<br>c\\|d"
    assert len(escape_cell("x" * 5000)) == 1000


def test_no_criteria_says_so() -> None:
    data = Verdict(profile="ci", target="url:backend", suites_run=["health"]).to_json()
    markdown = render_markdown(assert_valid_report(data))
    assert markdown.startswith("## ? pytest-apex verdict: INCONCLUSIVE\n")
    assert "**0 criteria: 0 passed, 0 failed, 0 inconclusive**" in markdown
    assert "- suite health ran but recorded no criterion" in markdown
    assert "No criterion was recorded." in markdown


def test_the_summary_is_the_report_only_nothing_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("APEX_BACKEND_URL", "https://user:s3cr3t-token@api.staging.example")
    monkeypatch.setenv("GITHUB_TOKEN", "ghs_s3cr3t")
    data = report(HEALTH_OK, P95_MISSED, topology="two_backends", faults=["slow_responses"])
    markdown = render_markdown(data, source=".apex/report.json")
    assert "s3cr3t" not in markdown
    assert "topology `two_backends` · faults `slow_responses`" in markdown
    assert markdown.endswith("Full report: `.apex/report.json`\n")


# --- the command -------------------------------------------------------------------------


def test_the_command_prints_the_default_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    data = report(HEALTH_OK)
    write(tmp_path / ".apex" / "report.json", data)
    assert main([]) == 0
    out = capsys.readouterr().out
    assert out == render_markdown(data, source=".apex/report.json")


def test_a_missing_report_exits_2_naming_the_file_and_what_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nowhere" / "report.json"
    assert main([str(missing)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"no report at {missing}" in captured.err
    assert "run the suites first" in captured.err
    # With --fail-unless-pass as well: still 2, a broken run rather than a verdict.
    assert main([str(missing), "--fail-unless-pass"]) == 2


def test_a_missing_report_leaves_a_note_in_the_summary_file(tmp_path: Path) -> None:
    summary = write(tmp_path / "summary.md", "earlier step\n")
    assert main([str(tmp_path / "report.json"), "--output", str(summary)]) == 2
    text = summary.read_text(encoding="utf-8")
    assert text.startswith("earlier step\n\n## ? pytest-apex: no verdict\n")
    assert f"no report at {tmp_path / 'report.json'}" in text


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is not JSON (Expecting property name"),
        ("[]", "is not a pytest-apex report (schema 2"),
        (json.dumps({**report(HEALTH_OK), "verdict": "green"}), "verdict: 'green' is not one of"),
    ],
)
def test_an_invalid_report_exits_2_saying_what_is_wrong(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, message: str
) -> None:
    path = write(tmp_path / "report.json", content)
    assert main([str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert str(path) in captured.err
    assert message in captured.err


def test_fail_unless_pass_exits_1_after_writing_the_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    failing = write(tmp_path / "fail.json", report(HEALTH_OK, P95_MISSED))
    inconclusive = write(tmp_path / "inconclusive.json", report(HEALTH_OK, NOT_OBSERVED))
    passing = write(tmp_path / "pass.json", report(HEALTH_OK))
    assert main([str(failing), "--fail-unless-pass"]) == 1
    captured = capsys.readouterr()
    assert captured.out.startswith("## ✗ pytest-apex verdict: FAIL")
    assert "the verdict is fail, not pass" in captured.err
    assert main([str(inconclusive), "--fail-unless-pass"]) == 1
    assert main([str(passing), "--fail-unless-pass"]) == 0
    assert main([str(failing)]) == 0  # without the flag the summary is all it does


def test_output_appends_as_github_step_summary_does(tmp_path: Path) -> None:
    summary = write(tmp_path / "step_summary.md", "# from an earlier step")  # no newline
    passing = write(tmp_path / "pass.json", report(HEALTH_OK))
    failing = write(tmp_path / "fail.json", report(P95_MISSED))
    assert main([str(passing), "--output", str(summary)]) == 0
    assert main([str(failing), "--output", str(summary), "--fail-unless-pass"]) == 1
    text = summary.read_text(encoding="utf-8")
    first = render_markdown(report(HEALTH_OK), source=str(passing))
    second = render_markdown(report(P95_MISSED), source=str(failing))
    assert text == f"# from an earlier step\n{first}\n{second}"
    fresh = tmp_path / "new.md"
    assert main([str(passing), "--output", str(fresh)]) == 0
    assert fresh.read_text(encoding="utf-8") == first


def test_an_output_that_cannot_be_written_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    passing = write(tmp_path / "pass.json", report(HEALTH_OK))
    assert main([str(passing), "--output", str(tmp_path)]) == 2  # a directory
    assert f"cannot append the summary to {tmp_path}" in capsys.readouterr().err


def test_python_dash_m_runs_it(tmp_path: Path) -> None:
    path = write(tmp_path / "report.json", report(HEALTH_OK, P95_MISSED))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "pytest_apex.summary", str(path), "--fail-unless-pass"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert result.stdout.startswith("## ✗ pytest-apex verdict: FAIL\n")
    help_text = subprocess.run(
        [sys.executable, "-m", "pytest_apex.summary", "--help"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    ).stdout
    assert "usage: python -m pytest_apex.summary" in help_text
