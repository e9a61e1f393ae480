"""The decision matrix: the shipped rows, a user's overrides, and every refusal naming its field."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pytest_apex.rollback.matrix import DecisionMatrix, Issue, MatrixError

SHIPPED = {
    # kind: (severity, automatic rollback, manual review), as reference §2 has them
    "isolation_failure": ("critical", True, True),
    "database_connection_failure": ("high", True, False),
    # The procedure's rollback triggers beside the matrix: unhealthy services, errors > 5 %.
    "unhealthy_service": ("high", True, False),
    "error_rate": ("high", True, True),
    "memory_leak": ("high", True, True),
    "websocket_failures": ("medium", False, True),
    "performance_degradation": ("medium", False, True),
    "configuration_error": ("low", False, True),
}


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "matrix.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _load_error(tmp_path: Path, text: str) -> str:
    path = _write(tmp_path, text)
    with pytest.raises(MatrixError) as info:
        DecisionMatrix.load(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ")  # every error names the file first
    return message


def test_the_shipped_matrix_is_the_reference_procedures() -> None:
    matrix = DecisionMatrix.default()
    assert {
        kind: (i.severity, i.auto_rollback, i.manual_review) for kind, i in matrix.issues.items()
    } == SHIPPED
    assert matrix.inconclusive == "pause"
    assert matrix.overridden == frozenset()
    assert [p.name for p in matrix.sources] == ["decision_matrix.toml"]
    assert all(issue.description for issue in matrix.issues.values())


def test_the_matrix_is_read_only() -> None:
    matrix = DecisionMatrix.default()
    with pytest.raises(TypeError):
        matrix.issues["memory_leak"] = matrix.issues["configuration_error"]  # type: ignore[index]


def test_a_users_file_changes_only_the_fields_it_gives(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "[issues.performance_degradation]\nauto_rollback = true\n",
    )
    matrix = DecisionMatrix.load(path)
    issue = matrix.issue("performance_degradation")
    assert (issue.severity, issue.auto_rollback, issue.manual_review) == ("medium", True, True)
    assert (
        issue.description == DecisionMatrix.default().issue("performance_degradation").description
    )
    # every other row, and the inconclusive policy, keep the shipped values
    others = {k: v for k, v in matrix.issues.items() if k != "performance_degradation"}
    assert others == {
        k: v for k, v in DecisionMatrix.default().issues.items() if k != "performance_degradation"
    }
    assert matrix.inconclusive == "pause"
    assert matrix.overridden == {"performance_degradation"}
    assert matrix.sources[-1] == path


def test_a_users_file_may_add_a_kind_and_change_the_inconclusive_policy(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        '[issues.queue_backlog]\nseverity = "high"\nauto_rollback = true\nmanual_review = false\n'
        '\n[inconclusive]\naction = "rollback"\n',
    )
    matrix = DecisionMatrix.load(path)
    assert matrix.issue("queue_backlog") == Issue("queue_backlog", "high", True, False)
    assert matrix.kinds[-1] == "queue_backlog"
    assert len(matrix.kinds) == len(SHIPPED) + 1
    assert matrix.inconclusive == "rollback"


def test_an_empty_users_file_is_the_shipped_matrix(tmp_path: Path) -> None:
    matrix = DecisionMatrix.load(_write(tmp_path, "# nothing changed\n"))
    assert matrix.issues == DecisionMatrix.default().issues
    assert matrix.overridden == frozenset()


def test_an_unknown_kind_asked_of_the_matrix_is_an_error_with_a_hint() -> None:
    with pytest.raises(KeyError, match=r"'memroy_leak' .* \(did you mean memory_leak\?\)"):
        DecisionMatrix.default().issue("memroy_leak")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[issues.memory_leak]\nseverity = "severe"\n',
            "[issues.memory_leak] severity: unknown severity 'severe'; "
            "accepted: critical, high, medium, low",
        ),
        (
            '[issues.memory_leak]\nseverity = "hihg"\n',
            "[issues.memory_leak] severity: unknown severity 'hihg' (did you mean high?); "
            "accepted: critical, high, medium, low",
        ),
        (
            '[issues.memory_leak]\nauto_rollback = "yes"\n',
            "[issues.memory_leak] auto_rollback: 'yes' is not a boolean; accepted: true, false",
        ),
        (
            "[issues.memory_leak]\nmanual_review = 1\n",
            "[issues.memory_leak] manual_review: 1 is not a boolean; accepted: true, false",
        ),
        (
            "[issues.memory_leak]\ndescription = 3\n",
            "[issues.memory_leak] description: 3 is not a string",
        ),
        (
            "[issues.memory_leak]\nauto_rollbak = true\n",
            "[issues.memory_leak] unknown key 'auto_rollbak' (did you mean auto_rollback?); "
            "accepted: severity, auto_rollback, manual_review, description",
        ),
        (
            "[issues.memroy_leak]\nauto_rollback = false\n",
            "[issues.memroy_leak]: unknown issue kind 'memroy_leak' (did you mean memory_leak?); "
            "rename it if it is a new kind",
        ),
        (
            '[issues.queue_backlog]\nseverity = "high"\n',
            "[issues.queue_backlog]: a new issue kind must give severity, auto_rollback, "
            "manual_review; missing: auto_rollback, manual_review",
        ),
        (
            "[issues.websocket_failures]\nmanual_review = false\n",
            "[issues.websocket_failures]: auto_rollback and manual_review are both false, so a "
            "failure of this kind would go nowhere; set one of them to true",
        ),
        (
            "[issues]\nmemory_leak = true\n",
            "[issues.memory_leak] must be a table (severity, auto_rollback, ...)",
        ),
        ("issues = 3\n", "[issues] must be a table of [issues.NAME] tables"),
        (
            "[issue.memory_leak]\nauto_rollback = false\n",
            "unknown key 'issue' (did you mean issues?); accepted: issues, inconclusive",
        ),
        (
            '[inconclusive]\naction = "promote"\n',
            "[inconclusive] action: 'promote' is refused: an analysis that could not measure "
            "never promotes; accepted: pause, rollback",
        ),
        (
            '[inconclusive]\naction = "paus"\n',
            "[inconclusive] action: unknown action 'paus' (did you mean pause?); "
            "accepted: pause, rollback",
        ),
        (
            '[inconclusive]\nwhat = "pause"\n',
            "[inconclusive] unknown key 'what'; accepted: action",
        ),
        ('inconclusive = "pause"\n', "[inconclusive] must be a table with an action"),
    ],
)
def test_every_bad_field_is_refused_by_name(tmp_path: Path, text: str, expected: str) -> None:
    message = _load_error(tmp_path, text)
    assert message.endswith(expected), message


def test_a_file_that_is_not_toml_is_named(tmp_path: Path) -> None:
    message = _load_error(tmp_path, "[issues.memory_leak\n")
    assert re.search(r": not valid TOML: .*line 1", message), message


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(MatrixError, match=re.escape(f"{path}: no such decision matrix file")):
        DecisionMatrix.load(path)


def test_a_directory_is_not_a_matrix_file(tmp_path: Path) -> None:
    with pytest.raises(MatrixError, match="cannot read the decision matrix"):
        DecisionMatrix.load(tmp_path)


def test_issue_values_are_checked_in_code_too() -> None:
    with pytest.raises(ValueError, match="unknown severity"):
        Issue("x", "severe", True, True)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="neither rolls back nor goes to a review"):
        Issue("x", "low", False, False)
    with pytest.raises(ValueError, match="unknown inconclusive action"):
        DecisionMatrix(issues={}, inconclusive="promote")  # type: ignore[arg-type]


def test_severity_rank_puts_the_worst_first() -> None:
    issues = DecisionMatrix.default().issues.values()
    ranked = [i.kind for i in sorted(issues, key=lambda i: i.rank)]
    assert ranked[0] == "isolation_failure"
    assert ranked[-1] == "configuration_error"
