"""The machine-readable verdict (``--apex-report``, default ``.apex/report.json``).

Its contract is the JSON Schema ``pytest_apex/report.schema.json`` (``schema`` 2)::

    {"schema": 2, "verdict": "pass" | "fail" | "inconclusive",
     "reasons": ["failed: load p95 2.41 s >= 2.00 s", ...],
     "profile": "ci", "target": "compose:…",
     "counts": {"passed": 3, "failed": 0, "skipped": 1, "error": 0},
     "suites_run": ["health", "isolation"],
     "inconclusive_tests": [{"test", "reason"}], "run_failures": ["xdist worker gw0 crashed: …"],
     "criteria": [{"suite", "name", "observed", "threshold", "op", "unit",
                   "stage": {"index", "count", "users"} | null,
                   "outcome": "pass" | "fail" | "inconclusive", "reason", "passed",
                   "samples", "min_samples", "test"}],
     "thresholds": {name: value}, "faults": [...], "topology": "two_backends" | null}

``observed`` is null when nothing was measured (NaN); such a criterion is inconclusive.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from pytest_apex.criteria import Verdict
from pytest_apex.settings import ApexSettings


def prepare(
    verdict: Verdict,
    *,
    settings: ApexSettings,
    target: Mapping[str, str],
    session_failed: bool,
) -> Verdict:
    """Fill in the run's context (profile, target, thresholds in effect, session outcome)."""
    verdict.profile = settings.profile
    verdict.target = target.get("target") or settings.target_label
    verdict.session_failed = verdict.session_failed or session_failed
    verdict.extra.update(
        {
            "thresholds": settings.thresholds.to_json(),
            "faults": list(settings.faults),
            "topology": settings.topology or None,
        }
    )
    return verdict


def write_report(verdict: Verdict, path: Path) -> Path:
    return verdict.write(path)


def read_report(path: Path) -> Verdict:
    return Verdict.read(path)
