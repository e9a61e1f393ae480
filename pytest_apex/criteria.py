"""Success criteria as values, and the run's verdict built from them.

A `Criterion` is one measured value compared with one threshold ("p95 < 2 s at 150 users").
It knows whether it passed and how to say so; it knows nothing about pytest. The `Verdict`
collects every criterion of a run (merged across xdist workers) and renders the JSON report.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, Final, Literal

Op = Literal["<", "<=", ">", ">=", "=="]
Outcome = Literal["pass", "fail", "inconclusive"]

OPS: Final[tuple[Op, ...]] = ("<", "<=", ">", ">=", "==")

# What was *seen* when a comparison did not hold: a failed `p95 < 2 s` reads `p95 2.41 s >= 2 s`.
NEGATED_OPS: Final[Mapping[str, str]] = {
    "<": ">=",
    "<=": ">",
    ">": "<=",
    ">=": "<",
    "==": "!=",
}

# The suites in the order their results are shown; other suite names sort after them.
SUITES: Final[tuple[str, ...]] = ("health", "isolation", "load", "rollback", "soak")

# 2: `outcome` and `reason` per criterion, `reasons`, `suites_run`, `inconclusive_tests` and
# `run_failures`; the JSON Schema is `report.schema.json`, shipped beside this module.
REPORT_SCHEMA_VERSION: Final = 2
REPORT_SCHEMA_FILE: Final = "report.schema.json"


def format_number(value: float) -> str:
    """Render a measurement for humans: three significant digits, integers as integers.

    ``2.0 -> "2.00"``, ``2.4134 -> "2.41"``, ``0.9991 -> "0.999"``, ``150 -> "150"``,
    ``1024.0 -> "1024"``. Values of 100 and more are rounded to whole numbers rather than
    written in exponent form, because thresholds such as 1024 KB/h read badly as ``1.02e+03``.
    """
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        return str(value)  # "nan", "inf": an empty metric must show as such, not as 0
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return str(round(value))
    text = f"{value:#.3g}"
    return text.rstrip(".") if "e" not in text else text


@dataclass(frozen=True)
class Stage:
    """Where in a staged run a criterion was measured: stage `index` of `count`, at `users`."""

    index: int
    count: int
    users: int

    def __post_init__(self) -> None:
        if not 1 <= self.index <= self.count:
            raise ValueError(f"stage index {self.index} is outside 1..{self.count}")
        if self.users < 0:
            raise ValueError(f"stage users must be >= 0, got {self.users}")

    def describe(self) -> str:
        return f"at {self.users} users (stage {self.index}/{self.count})"

    def to_json(self) -> dict[str, int]:
        return {"index": self.index, "count": self.count, "users": self.users}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Stage:
        return cls(index=int(data["index"]), count=int(data["count"]), users=int(data["users"]))


def _with_unit(value: float, unit: str) -> str:
    return f"{format_number(value)} {unit}" if unit else format_number(value)


@dataclass(frozen=True)
class Criterion:
    """One success criterion: `observed op threshold`, e.g. load p95 1.2 s < 2.0 s.

    Its `outcome` is computed, never given, so a criterion cannot claim a result its numbers
    do not support. It is *inconclusive* when there was nothing to compare: the observation
    is missing or NaN (an empty metric), it stands on fewer `samples` than `min_samples`, or
    the check could not run (`inconclusive` says why). No data never passes a gate, and it
    never reads as a breach of the app either.
    """

    suite: str
    name: str
    observed: float
    threshold: float
    op: Op
    unit: str = ""
    stage: Stage | None = None
    test: str = ""  # node id of the test that recorded it ("" outside a test)
    samples: int | None = None  # how many observations `observed` stands on (None: not counted)
    min_samples: int = 0  # fewer samples than this: inconclusive
    inconclusive: str = ""  # why the check could not run ("" when it ran)

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise ValueError(f"criterion op {self.op!r} is not one of {', '.join(OPS)}")
        if not self.suite or not self.name:
            raise ValueError("a criterion needs a suite and a name")
        if self.min_samples < 0 or (self.samples is not None and self.samples < 0):
            raise ValueError("samples and min_samples must be >= 0")

    @property
    def reason(self) -> str:
        """Why the criterion is inconclusive ("" when it could be judged)."""
        if self.inconclusive:
            return self.inconclusive
        if math.isnan(self.observed):
            return "nothing was observed (the value is missing or NaN)"
        if math.isnan(self.threshold):
            return "no threshold to compare with"
        if self.samples is not None and self.samples < self.min_samples:
            return f"{self.samples} samples, fewer than the {self.min_samples} needed"
        return ""

    @property
    def outcome(self) -> Outcome:
        if self.reason:
            return "inconclusive"
        return "pass" if holds(self.observed, self.op, self.threshold) else "fail"

    @property
    def passed(self) -> bool:
        return self.outcome == "pass"

    @property
    def failed(self) -> bool:
        return self.outcome == "fail"

    @property
    def message(self) -> str:
        """``load p95 2.41 s >= 2.00 s at 150 users (stage 5/5)``: what was seen, in one line.

        A passed criterion shows its op (``1.20 s < 2.00 s``); a failed one the negated op,
        so the line states the observation rather than the requirement; an inconclusive one
        says so, with the requirement and the reason.
        """
        if self.outcome == "inconclusive":
            text = (
                f"{self.suite} {self.name} inconclusive "
                f"(needs {self.op} {_with_unit(self.threshold, self.unit)}): {self.reason}"
            )
        else:
            op = self.op if self.passed else NEGATED_OPS[self.op]
            text = (
                f"{self.suite} {self.name} {_with_unit(self.observed, self.unit)} "
                f"{op} {_with_unit(self.threshold, self.unit)}"
            )
        return f"{text} {self.stage.describe()}" if self.stage else text

    def to_json(self) -> dict[str, Any]:
        return {
            "suite": self.suite,
            "name": self.name,
            "observed": _json_number(self.observed),
            "threshold": _json_number(self.threshold),
            "op": self.op,
            "unit": self.unit,
            "stage": self.stage.to_json() if self.stage else None,
            "outcome": self.outcome,
            "reason": self.reason,
            "passed": self.passed,
            "samples": self.samples,
            "min_samples": self.min_samples,
            "test": self.test,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Criterion:
        """Inverse of `to_json`; the outcome is recomputed, not trusted.

        A stored reason is kept as the "could not run" reason only when the numbers alone
        would not explain it, so a round trip gives the same outcome and reason.
        """
        stage = data.get("stage")
        samples = data.get("samples")
        criterion = cls(
            suite=str(data["suite"]),
            name=str(data["name"]),
            observed=_number_from_json(data["observed"]),
            threshold=_number_from_json(data["threshold"]),
            op=data["op"],
            unit=str(data.get("unit", "")),
            stage=Stage.from_json(stage) if stage else None,
            test=str(data.get("test", "")),
            samples=None if samples is None else int(samples),
            min_samples=int(data.get("min_samples") or 0),
        )
        reason = str(data.get("reason") or "")
        if data.get("outcome") == "inconclusive" and reason and criterion.reason != reason:
            criterion = replace(criterion, inconclusive=reason)
        return criterion


def holds(observed: float, op: Op, threshold: float) -> bool:
    match op:
        case "<":
            return observed < threshold
        case "<=":
            return observed <= threshold
        case ">":
            return observed > threshold
        case ">=":
            return observed >= threshold
        case "==":
            return observed == threshold
    raise AssertionError(f"unreachable op {op!r}")  # pragma: no cover


def _json_number(value: float) -> float | None:
    # JSON has no NaN/Infinity; `null` keeps the file valid and still reads as "no value".
    return value if math.isfinite(value) else None


def _number_from_json(value: float | None) -> float:
    return math.nan if value is None else value


def _suite_rank(suite: str) -> tuple[int, str]:
    return (SUITES.index(suite) if suite in SUITES else len(SUITES), suite)


@dataclass(frozen=True)
class InconclusiveTest:
    """A suite test that ended without a judgement: it raised `Inconclusive`, or it skipped
    after recording criteria (so what it recorded is only part of what it set out to prove)."""

    test: str
    reason: str

    def to_json(self) -> dict[str, str]:
        return {"test": self.test, "reason": self.reason}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> InconclusiveTest:
        return cls(test=str(data["test"]), reason=str(data.get("reason", "")))


@dataclass
class Verdict:
    """Every criterion of a run, plus how the test session itself went.

    `status` is ``fail`` when a criterion failed, the session failed or a run failure was
    noted (a crashed xdist worker); else ``inconclusive`` when a criterion or a suite test was
    inconclusive, a suite that ran recorded nothing, or nothing was measured at all; else
    ``pass``. A crashed suite that recorded nothing must not read as a pass.
    """

    profile: str = "ci"
    target: str = ""
    criteria: list[Criterion] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    session_failed: bool = False
    suites_run: list[str] = field(default_factory=list)  # suites with tests run this session
    inconclusive_tests: list[InconclusiveTest] = field(default_factory=list)
    run_failures: list[str] = field(default_factory=list)  # failures no criterion can show
    extra: dict[str, Any] = field(default_factory=dict)  # thresholds, faults: context for readers

    def add(self, criterion: Criterion) -> None:
        self.criteria.append(criterion)

    def extend(self, criteria: Iterable[Criterion]) -> None:
        self.criteria.extend(criteria)

    def merge(self, other: Verdict) -> None:
        """Fold another process's verdict (an xdist worker's) into this one."""
        self.criteria.extend(other.criteria)
        for outcome, count in other.counts.items():
            self.count(outcome, count)
        self.session_failed = self.session_failed or other.session_failed
        for suite in other.suites_run:
            self.note_suite_run(suite)
        self.inconclusive_tests.extend(other.inconclusive_tests)
        self.run_failures.extend(other.run_failures)

    def count(self, outcome: str, n: int = 1) -> None:
        self.counts[outcome] = self.counts.get(outcome, 0) + n

    def note_suite_run(self, suite: str) -> None:
        """A test of `suite` ran in this session (so the suite owes the verdict a criterion)."""
        if suite not in self.suites_run:
            self.suites_run.append(suite)
            self.suites_run.sort(key=_suite_rank)

    @property
    def failed_criteria(self) -> list[Criterion]:
        return [c for c in self.criteria if c.failed]

    @property
    def inconclusive_criteria(self) -> list[Criterion]:
        return [c for c in self.criteria if c.outcome == "inconclusive"]

    @property
    def silent_suites(self) -> list[str]:
        """Suites whose tests ran but recorded no criterion: they proved nothing."""
        recorded = {c.suite for c in self.criteria}
        return [s for s in self.suites_run if s not in recorded]

    @property
    def applies(self) -> bool:
        """Whether this run was about a deployment at all: it ran suite tests or recorded
        criteria. A plain test run (the plugin merely loaded) has a verdict nobody asked for."""
        return bool(self.criteria or self.suites_run)

    @property
    def passed(self) -> bool:
        return not self.session_failed and not self.failed_criteria and not self.run_failures

    @property
    def status(self) -> Outcome:
        """`fail` if anything failed; else `inconclusive` if anything could not be judged, or
        nothing was measured at all (a run whose every check skipped proved nothing, and must
        not read as a pass; Argo Rollouts' analysis runs make the same distinction); else
        `pass`."""
        if not self.passed:
            return "fail"
        if (
            not self.criteria
            or self.inconclusive_criteria
            or self.inconclusive_tests
            or self.silent_suites
        ):
            return "inconclusive"
        return "pass"

    @property
    def reasons(self) -> list[str]:
        """Why the verdict is not a pass, one line per cause (empty for a pass)."""
        lines = [f"failed: {c.message}" for c in self.failed_criteria]
        lines += self.run_failures
        if self.session_failed and not lines:
            lines.append("the test session failed")
        lines += [f"inconclusive: {c.message}" for c in self.inconclusive_criteria]
        lines += [f"inconclusive test {t.test}: {t.reason}" for t in self.inconclusive_tests]
        lines += [f"suite {s} ran but recorded no criterion" for s in self.silent_suites]
        if not self.criteria and not lines:
            lines.append("no criterion was recorded")
        return lines

    def by_suite(self) -> dict[str, list[Criterion]]:
        """Criteria grouped by suite, suites in canonical order, criteria in recorded order."""
        groups: dict[str, list[Criterion]] = {}
        for criterion in sorted(self.criteria, key=lambda c: _suite_rank(c.suite)):
            groups.setdefault(criterion.suite, []).append(criterion)
        return groups

    def to_json(self) -> dict[str, Any]:
        ordered = [c for group in self.by_suite().values() for c in group]
        return {
            "schema": REPORT_SCHEMA_VERSION,
            "verdict": self.status,
            "profile": self.profile,
            "target": self.target,
            "reasons": self.reasons,
            "counts": dict(sorted(self.counts.items())),
            "suites_run": list(self.suites_run),
            "inconclusive_tests": [t.to_json() for t in self.inconclusive_tests],
            "run_failures": list(self.run_failures),
            "criteria": [c.to_json() for c in ordered],
            **self.extra,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Verdict:
        known = {
            "schema",
            "verdict",
            "reasons",
            "profile",
            "target",
            "counts",
            "suites_run",
            "inconclusive_tests",
            "run_failures",
            "criteria",
        }
        verdict = cls(
            profile=str(data.get("profile", "ci")),
            target=str(data.get("target", "")),
            criteria=[Criterion.from_json(c) for c in data.get("criteria", [])],
            counts={str(k): int(v) for k, v in data.get("counts", {}).items()},
            suites_run=[str(s) for s in data.get("suites_run", [])],
            inconclusive_tests=[
                InconclusiveTest.from_json(t) for t in data.get("inconclusive_tests", [])
            ],
            run_failures=[str(f) for f in data.get("run_failures", [])],
            extra={k: v for k, v in data.items() if k not in known},
        )
        # A report saying "fail" with nothing else failing failed for session reasons.
        verdict.session_failed = data.get("verdict") == "fail" and verdict.passed
        return verdict

    def write(self, path: Path) -> Path:
        """Write the JSON report atomically, so a reader never sees half a verdict."""
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.to_json(), indent=2, allow_nan=False) + "\n"
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide the report from CI artifact readers
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def read(cls, path: Path) -> Verdict:
        return cls.from_json(json.loads(path.read_text(encoding="utf-8")))


def report_schema() -> dict[str, Any]:
    """The JSON Schema every report written by `Verdict.write` satisfies (a CI contract)."""
    text = resources.files("pytest_apex").joinpath(REPORT_SCHEMA_FILE).read_text("utf-8")
    return dict(json.loads(text))
