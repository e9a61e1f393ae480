"""Criteria as values: comparisons, messages, JSON, and the verdict built from them."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from pytest_apex.criteria import (
    Criterion,
    InconclusiveTest,
    Op,
    Stage,
    Verdict,
    format_number,
    report_schema,
)
from pytest_apex.reporting import terminal
from tests.report_schema import assert_valid_report


def _c(
    observed: float,
    threshold: float,
    op: Op,
    *,
    suite: str = "load",
    name: str = "p95",
    unit: str = "s",
    stage: Stage | None = None,
) -> Criterion:
    return Criterion(suite, name, observed, threshold, op, unit, stage)


def test_failed_criterion_reads_as_what_was_seen() -> None:
    criterion = _c(2.4134, 2.0, "<", stage=Stage(index=5, count=5, users=150))
    assert not criterion.passed
    assert criterion.message == "load p95 2.41 s >= 2.00 s at 150 users (stage 5/5)"


def test_passed_criterion_reads_with_its_op() -> None:
    criterion = _c(1.2, 2.0, "<")
    assert criterion.passed
    assert criterion.message == "load p95 1.20 s < 2.00 s"


def test_unitless_criterion_message() -> None:
    criterion = _c(1, 0, "<=", suite="isolation", name="breaches", unit="")
    assert criterion.message == "isolation breaches 1 > 0"


@pytest.mark.parametrize(
    ("observed", "op", "threshold", "passed", "seen"),
    [
        (1.0, "<", 2.0, True, "<"),
        (2.0, "<", 2.0, False, ">="),
        (2.0, "<=", 2.0, True, "<="),
        (2.5, "<=", 2.0, False, ">"),
        (0.9995, ">", 0.999, True, ">"),
        (0.999, ">", 0.999, False, "<="),
        (150, ">=", 150, True, ">="),
        (149, ">=", 150, False, "<"),
        (0, "==", 0, True, "=="),
        (1, "==", 0, False, "!="),
    ],
)
def test_ops_and_their_negations(
    observed: float, op: Op, threshold: float, passed: bool, seen: str
) -> None:
    criterion = _c(observed, threshold, op, unit="")
    assert criterion.passed is passed
    assert f" {seen} " in criterion.message


@pytest.mark.parametrize("op", ["<", "<=", ">", ">=", "=="])
def test_no_data_never_passes(op: Op) -> None:
    criterion = _c(math.nan, 2.0, op)
    assert not criterion.passed
    assert criterion.outcome == "inconclusive"
    assert "NaN" in criterion.message


def test_invalid_criteria_are_rejected() -> None:
    with pytest.raises(ValueError, match="op '!=' is not one of"):
        _c(1, 2, "!=")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="suite and a name"):
        _c(1, 2, "<", suite="")
    with pytest.raises(ValueError, match=r"outside 1\.\.5"):
        Stage(index=6, count=5, users=10)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (2.0, "2.00"),
        (2.4134, "2.41"),
        (0.9991, "0.999"),
        (0.05, "0.0500"),
        (12.345, "12.3"),
        (150, "150"),
        (150.0, "150"),
        (1024.0, "1024"),
        (86400.0, "86400"),
        (0, "0"),
        (0.0, "0"),
        (-2.5, "-2.50"),
        (math.nan, "nan"),
    ],
)
def test_numbers_have_three_significant_digits(value: float, text: str) -> None:
    assert format_number(value) == text


def test_criterion_json_round_trip() -> None:
    criterion = Criterion(
        "load", "p95", 2.41, 2.0, "<", "s", Stage(5, 5, 150), test="tests/test_load.py::test_p95"
    )
    data = criterion.to_json()
    assert data == {
        "suite": "load",
        "name": "p95",
        "observed": 2.41,
        "threshold": 2.0,
        "op": "<",
        "unit": "s",
        "stage": {"index": 5, "count": 5, "users": 150},
        "outcome": "fail",
        "reason": "",
        "passed": False,
        "samples": None,
        "min_samples": 0,
        "test": "tests/test_load.py::test_p95",
    }
    assert Criterion.from_json(json.loads(json.dumps(data))) == criterion


def test_nan_becomes_null_in_json_and_back() -> None:
    data = _c(math.nan, 2.0, "<").to_json()
    assert data["observed"] is None
    assert math.isnan(Criterion.from_json(data).observed)


def test_passed_is_recomputed_not_trusted() -> None:
    data = _c(3.0, 2.0, "<").to_json() | {"passed": True}
    assert not Criterion.from_json(data).passed


def test_verdict_passes_only_with_all_criteria_and_a_clean_session() -> None:
    verdict = Verdict()
    assert verdict.status == "inconclusive"  # nothing measured proves nothing
    verdict.add(_c(1.0, 2.0, "<"))
    assert verdict.status == "pass"
    verdict.session_failed = True
    assert verdict.status == "fail"
    verdict.session_failed = False
    verdict.add(_c(3.0, 2.0, "<"))
    assert verdict.status == "fail"
    assert verdict.failed_criteria == [_c(3.0, 2.0, "<")]


def test_merge_folds_criteria_counts_and_failure() -> None:
    ours = Verdict(criteria=[_c(1, 2, "<")], counts={"passed": 1})
    theirs = Verdict(criteria=[_c(1, 2, "<", suite="health")], counts={"passed": 2, "failed": 1})
    theirs.session_failed = True
    ours.merge(theirs)
    assert len(ours.criteria) == 2
    assert ours.counts == {"passed": 3, "failed": 1}
    assert ours.status == "fail"


def test_criteria_group_by_suite_in_canonical_order() -> None:
    verdict = Verdict()
    for suite in ("custom", "rollback", "health", "load", "health", "isolation"):
        verdict.add(_c(1, 2, "<", suite=suite))
    assert list(verdict.by_suite()) == ["health", "isolation", "load", "rollback", "custom"]
    assert len(verdict.by_suite()["health"]) == 2


def test_verdict_writes_valid_json_and_reads_back(tmp_path: Path) -> None:
    verdict = Verdict(profile="staging", target="compose:apexrun-1", counts={"passed": 2})
    verdict.add(_c(1.2, 2.0, "<", stage=Stage(1, 5, 10)))
    verdict.add(_c(math.nan, 0.01, "<", name="error_rate", unit=""))
    path = verdict.write(tmp_path / "deep" / "report.json")
    data = assert_valid_report(json.loads(path.read_text()))  # strict JSON: no NaN
    assert data["verdict"] == "inconclusive"  # nothing failed; error_rate had no data
    assert data["profile"] == "staging"
    assert data["target"] == "compose:apexrun-1"
    assert data["counts"] == {"passed": 2}
    assert [c["passed"] for c in data["criteria"]] == [True, False]
    assert list(tmp_path.joinpath("deep").iterdir()) == [path]  # no temp file left behind
    again = Verdict.read(path)
    assert again.status == "inconclusive"
    assert again.criteria[0] == verdict.criteria[0]


def test_a_suite_test_that_skipped_after_recording_makes_the_verdict_inconclusive() -> None:
    verdict = Verdict(criteria=[_c(1, 2, "<", suite="isolation")], suites_run=["isolation"])
    assert verdict.status == "pass"
    verdict.inconclusive_tests.append(
        InconclusiveTest("t.py::test_iso", "the database check did not run")
    )
    assert verdict.status == "inconclusive"
    assert verdict.reasons == ["inconclusive test t.py::test_iso: the database check did not run"]


def test_a_suite_that_ran_but_recorded_nothing_makes_the_verdict_inconclusive() -> None:
    verdict = Verdict(criteria=[_c(1, 2, "<", suite="load")])
    verdict.note_suite_run("load")
    verdict.note_suite_run("health")
    verdict.note_suite_run("load")
    assert verdict.suites_run == ["health", "load"]  # canonical order, once each
    assert verdict.silent_suites == ["health"]
    assert verdict.status == "inconclusive"
    assert verdict.reasons == ["suite health ran but recorded no criterion"]


def test_a_run_failure_fails_the_verdict_whatever_the_criteria_say() -> None:
    verdict = Verdict(criteria=[_c(1, 2, "<")])
    verdict.run_failures.append("xdist worker gw0 crashed: Segmentation fault")
    assert verdict.status == "fail"
    assert verdict.reasons == ["xdist worker gw0 crashed: Segmentation fault"]


def test_reasons_list_failures_before_what_could_not_be_judged() -> None:
    verdict = Verdict(criteria=[_c(3.0, 2.0, "<"), _c(math.nan, 2.0, "<", name="p99")])
    assert verdict.reasons == [
        "failed: load p95 3.00 s >= 2.00 s",
        "inconclusive: load p99 inconclusive (needs < 2.00 s): "
        "nothing was observed (the value is missing or NaN)",
    ]
    assert Verdict().reasons == ["no criterion was recorded"]
    assert Verdict(criteria=[_c(1, 2, "<")]).reasons == []


def test_verdict_json_round_trip_keeps_why_it_is_not_a_pass(tmp_path: Path) -> None:
    verdict = Verdict(
        criteria=[_c(1, 2, "<", suite="isolation")],
        suites_run=["health", "isolation"],
        inconclusive_tests=[InconclusiveTest("t.py::test_x", "skipped: no db")],
        run_failures=["xdist worker gw1 crashed: boom"],
    )
    data = assert_valid_report(verdict.to_json())
    assert data["schema"] == 2
    assert data["suites_run"] == ["health", "isolation"]
    assert data["inconclusive_tests"] == [{"test": "t.py::test_x", "reason": "skipped: no db"}]
    assert data["run_failures"] == ["xdist worker gw1 crashed: boom"]
    again = Verdict.read(verdict.write(tmp_path / "r.json"))
    assert again.to_json() == data
    assert not again.session_failed  # "fail" is explained by the run failure, not the session


def test_the_schema_rejects_a_report_that_breaks_the_contract() -> None:
    good = Verdict(criteria=[_c(1, 2, "<")]).to_json()
    for broken in (
        good | {"verdict": "passed"},
        good | {"criteria": [good["criteria"][0] | {"outcome": "maybe"}]},
        good | {"criteria": [good["criteria"][0] | {"extra": 1}]},
        {k: v for k, v in good.items() if k != "reasons"},
    ):
        with pytest.raises(AssertionError, match=r"breaks report\.schema\.json"):
            assert_valid_report(broken)
    assert report_schema()["properties"]["schema"] == {
        "const": 2,
        "description": "version of this format",
    }


def test_a_session_failure_survives_a_round_trip(tmp_path: Path) -> None:
    verdict = Verdict(criteria=[_c(1, 2, "<")], session_failed=True)
    path = verdict.write(tmp_path / "r.json")
    assert_valid_report(json.loads(path.read_text()))
    assert Verdict.read(path).status == "fail"


def test_terminal_table_falls_back_to_ascii() -> None:
    verdict = Verdict(criteria=[_c(1.2, 2.0, "<"), _c(2.5, 2.0, "<")])
    lines = [line.text for line in terminal.render(verdict, Path("r.json"), unicode=False)]
    assert lines == [
        "load: 1 passed, 1 failed, 0 inconclusive",
        "  ok    p95  1.20  <  2.00  s",
        "  FAIL  p95  2.50  <  2.00  s",
        "verdict: FAIL (1/2 criteria met)",
        "report: r.json",
    ]
    assert not terminal.can_encode("✓", "ascii")


def test_terminal_table_shows_inconclusive_rows_and_why_the_verdict_is_inconclusive() -> None:
    verdict = Verdict(
        criteria=[
            _c(0, 0, "<=", suite="isolation", name="cross_user_events", unit=""),
            Criterion(
                "isolation",
                "isolation_violations.rows",
                math.nan,
                0,
                "<=",
                inconclusive="the database check did not run: no postgres endpoint",
            ),
        ],
        suites_run=["health", "isolation"],
        inconclusive_tests=[InconclusiveTest("t.py::test_iso", "skipped after recording")],
    )
    lines = terminal.render(verdict, None, unicode=False)
    assert [line.text for line in lines] == [
        "isolation: 1 passed, 0 failed, 1 inconclusive",
        "  ok            cross_user_events            0  <=  0",
        "  INCONCLUSIVE  isolation_violations.rows  nan  <=  0"
        "  the database check did not run: no postgres endpoint",
        "verdict: INCONCLUSIVE (1/2 criteria met; 1 inconclusive: "
        "isolation isolation_violations.rows)",
        "  inconclusive test t.py::test_iso: skipped after recording",
        "  suite health ran but recorded no criterion",
    ]
    colours = [(line.green, line.red, line.yellow) for line in lines]
    assert colours[1] == (True, False, False)
    assert all(c == (False, False, True) for c in colours[2:])
    unicode_row = terminal.render(verdict, None)[2].text
    assert unicode_row.startswith("  ?  isolation_violations.rows")


def test_terminal_summary_appears_when_a_suite_ran_and_recorded_nothing() -> None:
    lines = terminal.render(Verdict(suites_run=["load"]), None)
    assert [line.text for line in lines] == [
        "verdict: INCONCLUSIVE (0/0 criteria met)",
        "  suite load ran but recorded no criterion",
    ]
    assert terminal.render(Verdict(), None) == []  # a plain test run stays quiet


def test_terminal_summary_names_a_crashed_worker() -> None:
    verdict = Verdict(criteria=[_c(1.0, 2.0, "<")], run_failures=["xdist worker gw0 crashed: x"])
    lines = terminal.render(verdict, None)
    assert [line.text for line in lines][-2:] == [
        "verdict: FAIL (1/1 criteria met)",
        "  xdist worker gw0 crashed: x",
    ]
    assert lines[-1].red


def test_public_surface() -> None:
    import pytest_apex

    assert set(pytest_apex.__all__) >= {
        "Criterion",
        "Verdict",
        "ApexSettings",
        "Target",
        "ContainerInfo",
    }
    assert all(hasattr(pytest_apex, name) for name in pytest_apex.__all__)
