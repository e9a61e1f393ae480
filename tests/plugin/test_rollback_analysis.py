"""The canary decision: every rule of `decide`, and no data never promoting."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from pytest_apex.criteria import Criterion, Stage
from pytest_apex.rollback.analysis import (
    NOTHING_MEASURED,
    Measurement,
    decide,
    measurement_from_criterion,
    measurements_from_criteria,
)
from pytest_apex.rollback.matrix import DecisionMatrix


def _pass(name: str, kind: str) -> Measurement:
    return Measurement(name, kind, "pass", observed=0.0, threshold=0.0)


def _fail(name: str, kind: str, detail: str = "") -> Measurement:
    return Measurement(name, kind, "fail", detail, observed=1.0, threshold=0.0)


def _unsure(name: str, kind: str) -> Measurement:
    return Measurement(name, kind, "inconclusive", "no samples")


def test_all_passed_promotes() -> None:
    decision = decide([_pass("health", "configuration_error"), _pass("p95", "memory_leak")])
    assert decision.action == "promote"
    assert decision.drivers == ("health", "p95")
    assert decision.reasons == ("every measurement passed (2): health, p95",)
    assert not decision.needs_review
    assert decision.severity is None
    assert decision.summary.startswith("promote: every measurement passed")


def test_nothing_measured_pauses() -> None:
    decision = decide([])
    assert decision.action == "pause"
    assert decision.reasons == (NOTHING_MEASURED,)
    assert decision.drivers == ()
    assert decision.needs_review


def test_a_critical_failure_rolls_back_even_with_inconclusives() -> None:
    decision = decide(
        [
            _unsure("p95", "performance_degradation"),
            _pass("health", "configuration_error"),
            _fail("leaks", "isolation_failure", "1 event reached another user"),
            _unsure("memory slope", "memory_leak"),
        ]
    )
    assert decision.action == "rollback"
    assert decision.drivers == ("leaks",)
    assert decision.severity == "critical"
    assert decision.needs_review  # isolation failures get a review after the rollback
    assert decision.reasons == (
        "rolls back: leaks [isolation_failure, critical]: 1 event reached another user",
        "also inconclusive: memory slope [memory_leak, high]: no samples",
        "also inconclusive: p95 [performance_degradation, medium]: no samples",
    )


def test_a_rollback_without_manual_review_needs_no_human() -> None:
    decision = decide([_fail("db", "database_connection_failure")])
    assert (decision.action, decision.needs_review, decision.severity) == (
        "rollback",
        False,
        "high",
    )
    assert decision.reasons == ("rolls back: db [database_connection_failure, high]",)


def test_a_rollback_lists_other_failures_and_asks_for_their_review() -> None:
    decision = decide(
        [_fail("ws drops", "websocket_failures"), _fail("db", "database_connection_failure")]
    )
    assert decision.action == "rollback"
    assert decision.drivers == ("db",)
    assert decision.needs_review  # the WebSocket failure wants a human
    assert decision.reasons[1] == "also failed: ws drops [websocket_failures, medium]"


def test_a_medium_failure_goes_to_review_not_rollback() -> None:
    decision = decide(
        [
            _pass("health", "configuration_error"),
            _fail("canary latency", "performance_degradation", "1.5x slower"),
            _unsure("ws", "websocket_failures"),
        ]
    )
    assert decision.action == "review"
    assert decision.drivers == ("canary latency",)
    assert decision.severity == "medium"
    assert decision.needs_review
    assert decision.reasons == (
        "needs review: canary latency [performance_degradation, medium]: 1.5x slower",
        "also inconclusive: ws [websocket_failures, medium]: no samples",
    )


def test_failures_are_listed_worst_first() -> None:
    decision = decide(
        [_fail("config", "configuration_error"), _fail("slow", "performance_degradation")]
    )
    assert decision.action == "review"
    assert decision.drivers == ("slow", "config")
    assert decision.severity == "medium"


def test_all_inconclusive_pauses_with_the_names() -> None:
    decision = decide(
        [_unsure("p95", "performance_degradation"), _unsure("leaks", "isolation_failure")]
    )
    assert decision.action == "pause"
    assert decision.drivers == ("leaks", "p95")
    assert decision.needs_review
    assert decision.severity is None
    assert decision.reasons == (
        "inconclusive, a human must look: leaks [isolation_failure, critical]: no samples",
        "inconclusive, a human must look: p95 [performance_degradation, medium]: no samples",
    )


def test_one_inconclusive_among_passes_pauses() -> None:
    decision = decide([_pass("health", "configuration_error"), _unsure("p95", "memory_leak")])
    assert (decision.action, decision.drivers) == ("pause", ("p95",))


def test_the_matrix_can_make_an_inconclusive_roll_back(tmp_path: Path) -> None:
    path = tmp_path / "matrix.toml"
    path.write_text('[inconclusive]\naction = "rollback"\n', encoding="utf-8")
    matrix = DecisionMatrix.load(path)
    decision = decide([_pass("h", "configuration_error"), _unsure("p95", "memory_leak")], matrix)
    assert decision.action == "rollback"
    assert decision.drivers == ("p95",)
    assert decision.reasons == ("rolls back (inconclusive): p95 [memory_leak, high]: no samples",)
    # a medium failure beside it is listed, not what drove the rollback
    both = decide([_fail("slow", "performance_degradation"), _unsure("p95", "memory_leak")], matrix)
    assert (both.action, both.drivers) == ("rollback", ("p95",))


def test_the_matrix_can_make_a_medium_failure_roll_back(tmp_path: Path) -> None:
    path = tmp_path / "matrix.toml"
    path.write_text("[issues.performance_degradation]\nauto_rollback = true\n", encoding="utf-8")
    decision = decide([_fail("slow", "performance_degradation")], DecisionMatrix.load(path))
    assert decision.action == "rollback"


def test_a_kind_the_matrix_does_not_know_is_an_error_even_on_a_pass() -> None:
    with pytest.raises(
        KeyError, match=r"measurement p95: .*'memroy_leak'.*did you mean memory_leak"
    ):
        decide([_pass("p95", "memroy_leak")])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "", "kind": "memory_leak", "outcome": "fail"}, "needs a name and an issue kind"),
        ({"name": "x", "kind": "", "outcome": "fail"}, "needs a name and an issue kind"),
        ({"name": "x", "kind": "memory_leak", "outcome": "ok"}, "outcome 'ok' is not one of"),
        (
            {"name": "x", "kind": "memory_leak", "outcome": "inconclusive"},
            "an inconclusive outcome needs a reason",
        ),
        (
            {"name": "x", "kind": "memory_leak", "outcome": "pass"},
            "a pass needs an observed value",
        ),
    ],
)
def test_a_measurement_cannot_claim_what_it_does_not_show(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Measurement(**kwargs)


# --- from criteria ---------------------------------------------------------------------------


def test_a_criterion_whose_every_sample_errored_is_never_a_pass() -> None:
    # Argo's trap: an empty or NaN metric. The criterion says inconclusive, and so does the
    # measurement made from it.
    empty = Criterion("load", "p95", math.nan, 2.0, "<", "s", samples=0, min_samples=20)
    measurement = measurement_from_criterion(empty, "performance_degradation")
    assert measurement.outcome == "inconclusive"
    assert "nothing was observed" in measurement.detail
    assert decide([measurement]).action == "pause"


def test_a_criterion_on_too_few_samples_is_inconclusive() -> None:
    thin = Criterion("load", "p95", 0.1, 2.0, "<", "s", samples=3, min_samples=20)
    measurement = measurement_from_criterion(thin, "performance_degradation")
    assert measurement.outcome == "inconclusive"
    assert "3 samples, fewer than the 20 needed" in measurement.detail


def test_a_criterion_keeps_its_outcome_numbers_and_stage() -> None:
    slow = Criterion("load", "p95", 2.41, 2.0, "<", "s", Stage(3, 5, 50), samples=400)
    measurement = measurement_from_criterion(slow, "performance_degradation")
    assert measurement == Measurement(
        "p95 at 50 users (stage 3/5)",
        "performance_degradation",
        "fail",
        "load p95 2.41 s >= 2.00 s at 50 users (stage 3/5)",
        2.41,
        2.0,
    )
    ok = Criterion("isolation", "cross-user events", 0, 0, "==")
    assert measurement_from_criterion(ok, "isolation_failure").outcome == "pass"


def test_criteria_become_measurements_of_their_kinds() -> None:
    criteria = [
        Criterion("isolation", "leaks", 0, 0, "=="),
        Criterion("health", "ready services", 3, 3, ">="),
    ]
    kinds = {"leaks": "isolation_failure", "ready services": "configuration_error"}
    measurements = measurements_from_criteria(criteria, kinds)
    assert [(m.name, m.kind, m.outcome) for m in measurements] == [
        ("leaks", "isolation_failure", "pass"),
        ("ready services", "configuration_error", "pass"),
    ]
    assert decide(measurements).action == "promote"


def test_an_expected_criterion_that_was_never_recorded_is_inconclusive() -> None:
    # Flagger's trap: a renamed metric that silently passes. Here it pauses the rollout.
    criteria = [Criterion("isolation", "leaks", 0, 0, "==")]
    kinds = {"leaks": "isolation_failure", "p95": "performance_degradation"}
    measurements = measurements_from_criteria(criteria, kinds)
    assert measurements[-1] == Measurement(
        "p95",
        "performance_degradation",
        "inconclusive",
        "criterion 'p95' was expected but not recorded",
    )
    decision = decide(measurements)
    assert (decision.action, decision.drivers) == ("pause", ("p95",))


def test_a_criterion_with_no_kind_is_an_error() -> None:
    criteria = [Criterion("load", "p99", 1.0, 2.0, "<")]
    with pytest.raises(
        KeyError, match="criterion load 'p99' has no issue kind; kinds are given for: p95"
    ):
        measurements_from_criteria(criteria, {"p95": "performance_degradation"})
