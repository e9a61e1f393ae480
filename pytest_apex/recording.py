"""The `apex_criteria` fixture: how a test turns a measurement into a recorded criterion.

    @pytest.mark.load
    def test_p95(apex_criteria, run_stage):
        result = run_stage(users=150)
        apex_criteria.check("p95", result.p95_s, 2.0, "<", unit="s", stage=Stage(5, 5, 150))

Every criterion goes into the run's verdict (and the JSON report) and fires
``pytest_apex_criterion_recorded`` (which reporters such as the Allure steps implement);
`check` then fails the test when it did not hold, `record` does not.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

import pytest

from pytest_apex._stash import verdict_key
from pytest_apex.criteria import SUITES, Criterion, Op, Stage, Verdict
from pytest_apex.settings import settings_key

SUITE_MARKERS: Final = SUITES


def suite_of(node: pytest.Item | pytest.Collector | None) -> str | None:
    """The closest suite marker of a node (the function's own before its class's or module's)."""
    if node is None:
        return None
    for mark in node.iter_markers():
        if mark.name in SUITE_MARKERS:
            return mark.name
    return None


def _number(value: float) -> float:
    # Counts stay integers ("1 > 0 breaches", not "1.00 > 0"); anything else becomes a float,
    # so numpy scalars and Decimals serialise like plain numbers.
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return float(value)


# pytest.skip.Exception is pytest's Skipped, reached through an attribute of the skip function
# that mypy cannot use as a base class.
class Inconclusive(pytest.skip.Exception):  # type: ignore[misc,name-defined]
    """Raised when a test's criteria held as far as they could be judged, but some could not.

    A skip to pytest (nothing the app did failed), and the criteria it recorded make the
    verdict inconclusive. Its message names every criterion that could not be judged and why.
    """


class CriteriaRecorder:
    """Records criteria into the run's verdict on behalf of one test."""

    def __init__(
        self, config: pytest.Config, node: pytest.Item | None = None, *, suite: str | None = None
    ) -> None:
        self._config = config
        self._node = node
        self._suite = suite or suite_of(node)
        self.recorded: list[Criterion] = []

    @property
    def _verdict(self) -> Verdict:
        return self._config.stash[verdict_key]

    def record(
        self,
        name: str,
        observed: float,
        threshold: float,
        op: Op,
        unit: str = "",
        stage: Stage | None = None,
        suite: str | None = None,
        *,
        samples: int | None = None,
        min_samples: int = 0,
        inconclusive: str = "",
    ) -> Criterion:
        """Record a criterion without failing the test; returns it (see ``.outcome``).

        `samples`/`min_samples`: how many observations the value stands on and how many it
        needs; `inconclusive`: why the check could not run. Either makes it inconclusive.
        """
        suite = suite or self._suite
        if not suite:
            raise TypeError(
                f"apex_criteria: criterion {name!r} has no suite; mark the test with one of "
                f"{', '.join(f'@pytest.mark.{s}' for s in SUITE_MARKERS)} or pass suite="
            )
        criterion = Criterion(
            suite=suite,
            name=name,
            observed=_number(observed),
            threshold=_number(threshold),
            op=op,
            unit=unit,
            stage=stage,
            test=self._node.nodeid if self._node is not None else "",
            samples=samples,
            min_samples=min_samples,
            inconclusive=inconclusive,
        )
        self._verdict.add(criterion)
        self.recorded.append(criterion)
        self._config.hook.pytest_apex_criterion_recorded(criterion=criterion, item=self._node)
        return criterion

    def check(
        self,
        name: str,
        observed: float,
        threshold: float,
        op: Op,
        unit: str = "",
        stage: Stage | None = None,
        suite: str | None = None,
        *,
        samples: int | None = None,
        min_samples: int = 0,
        inconclusive: str = "",
    ) -> Criterion:
        """Record a criterion; fail the test with its message when it does not hold, and
        raise `Inconclusive` when it could not be judged."""
        __tracebackhide__ = True
        criterion = self.record(
            name,
            observed,
            threshold,
            op,
            unit,
            stage,
            suite,
            samples=samples,
            min_samples=min_samples,
            inconclusive=inconclusive,
        )
        if criterion.failed:
            raise AssertionError(criterion.message)
        if criterion.outcome == "inconclusive":
            raise Inconclusive(criterion.message)
        return criterion

    def check_threshold(
        self,
        threshold_name: str,
        observed: float,
        *,
        name: str | None = None,
        stage: Stage | None = None,
        suite: str | None = None,
        samples: int | None = None,
        min_samples: int = 0,
        inconclusive: str = "",
    ) -> Criterion:
        """`check` against a configured threshold, taking its value, op and unit from settings.

        ``apex_criteria.check_threshold("p95_s_max", 2.41, stage=...)`` checks
        ``p95 < 2.0 s`` with the profile's value, or the user's override.
        """
        __tracebackhide__ = True
        thresholds = self._config.stash[settings_key].thresholds
        spec = thresholds.spec(threshold_name)
        if spec.op is None:
            raise TypeError(f"threshold {threshold_name!r} is a setting, not a criterion")
        if spec.kind == "count":
            threshold: float = thresholds.integer(threshold_name)
        else:
            threshold = thresholds.number(threshold_name)
        return self.check(
            name or spec.criterion,
            observed,
            threshold,
            spec.op,
            unit=spec.unit,
            stage=stage,
            suite=suite,
            samples=samples,
            min_samples=min_samples,
            inconclusive=inconclusive,
        )

    def judge(self, checks: Iterable[Check]) -> list[Criterion]:
        """Record every check, then fail naming each one that did not hold.

        All are recorded before failing so the verdict stays complete: one dependency down
        must not hide the state of the others. Failures fail the test (listing any
        inconclusive checks too); with no failure, inconclusive checks raise `Inconclusive`.
        No checks at all is inconclusive: a test that measured nothing proved nothing.
        """
        __tracebackhide__ = True
        checks = list(checks)
        if not checks:
            raise Inconclusive("nothing to check: the target exposes none of what this test needs")
        recorded, failures, undecided = [], [], []
        for check in checks:
            criterion = self.record(
                check.name,
                check.observed,
                check.threshold,
                check.op,
                unit=check.unit,
                stage=check.stage,
                samples=check.samples,
                min_samples=check.min_samples,
                inconclusive=check.inconclusive,
            )
            recorded.append(criterion)
            line = criterion.message + (f": {check.detail}" if check.detail else "")
            if criterion.failed:
                failures.append(line)
            elif criterion.outcome == "inconclusive":
                undecided.append(line)
        if failures:
            raise AssertionError("\n".join(failures + undecided))
        if undecided:
            raise Inconclusive("\n".join(undecided))
        return recorded


@dataclass(frozen=True)
class Check:
    """One criterion to judge, with what was seen in words for when it fails."""

    name: str
    observed: float
    threshold: float
    op: Op
    unit: str = ""
    detail: str = ""
    samples: int | None = None  # how many observations `observed` stands on
    min_samples: int = 0  # fewer samples than this: inconclusive
    inconclusive: str = ""  # why the check could not run ("" when it ran)
    stage: Stage | None = None  # where in a staged run it was measured (load stages)


@pytest.fixture
def apex_criteria(request: pytest.FixtureRequest) -> CriteriaRecorder:
    """Record success criteria of this test: ``.check(...)`` asserts, ``.record(...)`` doesn't.

    The suite defaults to the test's marker (health, isolation, load, rollback or soak).
    """
    return CriteriaRecorder(request.config, request.node)
