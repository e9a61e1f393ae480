"""The canary analysis: measurements of the candidate in, promote / rollback / review / pause out.

Each `Measurement` is one thing seen on the candidate (its health, a latency comparison with
the baseline, an isolation smoke run), with the kind of issue it would reveal when it fails
(a row of the `DecisionMatrix`). `decide` reads them, in this order:

1. any failed measurement whose kind rolls back automatically: ``rollback``, whatever else
   is failed or inconclusive (a leak between users is not outweighed by a metric that had
   no data);
2. any other failed measurement: ``review`` (a human decides; nothing is rolled back);
3. any inconclusive measurement: ``pause``, as an Argo Rollouts analysis run that ends
   Inconclusive pauses the rollout for a human (the matrix's ``[inconclusive]`` may make it
   ``rollback`` instead, never ``promote``);
4. no measurement at all: ``pause``. An analysis with no data never promotes;
5. else ``promote``.

The decision names the measurements that drove it, worst issue first.

Argo's trap (reference §4, argoproj/argo-rollouts #4479): an analysis reported Successful
although every measurement had errored. Here no data cannot become a pass, by construction:

* a ``pass`` must carry an observed number (`Measurement` refuses a NaN one), and an
  ``inconclusive`` must say why;
* `measurement_from_criterion` copies the outcome of a `pytest_apex.criteria.Criterion`,
  which is computed from its numbers and is inconclusive when the observation is missing or
  NaN (every sample errored, an empty query) or stands on fewer samples than it needs;
* `measurements_from_criteria` turns a criterion the analysis expected but never saw into an
  inconclusive measurement, and refuses a criterion it has no issue kind for, so a renamed
  metric neither passes silently (Flagger's trap) nor drops out of the decision;
* a kind the matrix does not know is an error (`DecisionMatrix.issue`), even on a pass.

Repeated sampling (Argo's ``failureLimit``, ``consecutiveErrorLimit``) belongs before this
module: a criterion aggregates its samples, with the minimum it needs, into one outcome.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from pytest_apex.criteria import Criterion, Outcome
from pytest_apex.rollback.matrix import DecisionMatrix, Issue, Severity

Action = Literal["promote", "rollback", "review", "pause"]
ACTIONS: Final[tuple[Action, ...]] = ("promote", "rollback", "review", "pause")
OUTCOMES: Final[tuple[Outcome, ...]] = ("pass", "fail", "inconclusive")
NOTHING_MEASURED: Final = "nothing was measured: an analysis with no data never promotes"


@dataclass(frozen=True)
class Measurement:
    """One thing seen on the candidate, and the kind of issue its failure reveals.

    `detail` says what was seen in words (a criterion's message); an inconclusive measurement
    must give it, as the reason it could not be judged. `observed` and `threshold` are the
    numbers behind it (NaN: none); a pass must stand on an observed number.
    """

    name: str
    kind: str
    outcome: Outcome
    detail: str = ""
    observed: float = math.nan
    threshold: float = math.nan

    def __post_init__(self) -> None:
        if not self.name or not self.kind:
            raise ValueError("a measurement needs a name and an issue kind")
        if self.outcome not in OUTCOMES:
            raise ValueError(
                f"measurement {self.name}: outcome {self.outcome!r} is not one of "
                f"{', '.join(OUTCOMES)}"
            )
        if self.outcome == "inconclusive" and not self.detail:
            raise ValueError(f"measurement {self.name}: an inconclusive outcome needs a reason")
        if self.outcome == "pass" and math.isnan(self.observed):
            raise ValueError(
                f"measurement {self.name}: a pass needs an observed value; a metric with no "
                "data is inconclusive, never a pass"
            )

    def line(self, issue: Issue) -> str:
        """``isolation leaks [isolation_failure, critical]: 1 event reached another user``."""
        head = f"{self.name} [{issue.kind}, {issue.severity}]"
        return f"{head}: {self.detail}" if self.detail else head


@dataclass(frozen=True)
class Decision:
    """What to do with the candidate, and why.

    `drivers` are the names of the measurements that decided it, worst issue first; `reasons`
    one line for each measurement that did not pass (the drivers first), or why it promoted.
    `needs_review`: a human must look, because the action is ``review`` or ``pause``, or a
    failed measurement's issue asks for a manual review even after its rollback.
    """

    action: Action
    reasons: tuple[str, ...]
    drivers: tuple[str, ...]
    needs_review: bool
    severity: Severity | None  # the worst failed issue's (None: nothing failed)
    measurements: tuple[Measurement, ...] = ()

    @property
    def summary(self) -> str:
        """``rollback: isolation leaks [isolation_failure, critical]: ...`` in one line."""
        return f"{self.action}: {'; '.join(self.reasons)}" if self.reasons else self.action


def decide(measurements: Iterable[Measurement], matrix: DecisionMatrix | None = None) -> Decision:
    """The decision for these measurements under `matrix` (the shipped one when None).

    The rules are the module doc's. A measurement whose kind the matrix does not know raises
    `KeyError` before anything is decided.
    """
    matrix = matrix or DecisionMatrix.default()
    seen = tuple(measurements)
    issues = {m: _issue(m, matrix) for m in seen}
    ranked = sorted(seen, key=lambda m: issues[m].rank)  # stable: recorded order kept
    failed = [m for m in ranked if m.outcome == "fail"]
    unjudged = [m for m in ranked if m.outcome == "inconclusive"]
    rolling = [m for m in failed if issues[m].auto_rollback]
    if matrix.inconclusive == "rollback":
        rolling += unjudged
    severity = issues[failed[0]].severity if failed else None
    review_wanted = any(issues[m].manual_review for m in failed)

    def lines(verb: str, group: Sequence[Measurement]) -> list[str]:
        return [f"{verb}: {m.line(issues[m])}" for m in group]

    if rolling:
        rest = [m for m in failed if m not in rolling]
        reasons = [
            *lines("rolls back", [m for m in failed if m in rolling]),
            *lines("rolls back (inconclusive)", [m for m in unjudged if m in rolling]),
            *lines("also failed", rest),
            *lines("also inconclusive", [m for m in unjudged if m not in rolling]),
        ]
        return Decision("rollback", tuple(reasons), _names(rolling), review_wanted, severity, seen)
    if failed:
        reasons = [*lines("needs review", failed), *lines("also inconclusive", unjudged)]
        return Decision("review", tuple(reasons), _names(failed), True, severity, seen)
    if unjudged:
        reasons = lines("inconclusive, a human must look", unjudged)
        return Decision("pause", tuple(reasons), _names(unjudged), True, None, seen)
    if not seen:
        return Decision("pause", (NOTHING_MEASURED,), (), True, None, seen)
    passed = f"every measurement passed ({len(seen)}): {', '.join(m.name for m in seen)}"
    return Decision("promote", (passed,), _names(seen), False, None, seen)


def _issue(measurement: Measurement, matrix: DecisionMatrix) -> Issue:
    try:
        return matrix.issue(measurement.kind)
    except KeyError as exc:
        raise KeyError(f"measurement {measurement.name}: {exc.args[0]}") from None


def _names(group: Iterable[Measurement]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(m.name for m in group))


def measurement_from_criterion(criterion: Criterion, kind: str) -> Measurement:
    """A criterion as a measurement of `kind`; its outcome is the criterion's, not re-judged.

    The name is the criterion's, with its stage when it has one (``p95 at 50 users (stage
    3/5)``), so two stages of one criterion stay two measurements; the detail is the
    criterion's message, which says why when it is inconclusive.
    """
    name = f"{criterion.name} {criterion.stage.describe()}" if criterion.stage else criterion.name
    return Measurement(
        name=name,
        kind=kind,
        outcome=criterion.outcome,
        detail=criterion.message,
        observed=criterion.observed,
        threshold=criterion.threshold,
    )


def measurements_from_criteria(
    criteria: Iterable[Criterion], kinds: Mapping[str, str]
) -> list[Measurement]:
    """Measurements for `criteria`, each of the kind `kinds` gives for its criterion name.

    Every name in `kinds` is expected: one that no criterion carries becomes an inconclusive
    measurement ("was not recorded"), so a renamed or missing metric cannot let the analysis
    promote without it. A criterion whose name `kinds` does not give raises `KeyError`: the
    analysis would otherwise ignore it.
    """
    criteria = list(criteria)
    measurements = []
    for criterion in criteria:
        kind = kinds.get(criterion.name)
        if kind is None:
            raise KeyError(
                f"criterion {criterion.suite} {criterion.name!r} has no issue kind; "
                f"kinds are given for: {', '.join(kinds) or 'nothing'}"
            )
        measurements.append(measurement_from_criterion(criterion, kind))
    recorded = {c.name for c in criteria}
    for name, kind in kinds.items():
        if name not in recorded:
            measurements.append(
                Measurement(
                    name,
                    kind,
                    "inconclusive",
                    f"criterion {name!r} was expected but not recorded",
                )
            )
    return measurements
