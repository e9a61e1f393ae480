"""The thresholds catalogue: every known threshold, its kind, unit, defaults and comparison.

Names are an interface: suites and users' ini files refer to them.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Literal

from pytest_apex.criteria import Op

PROFILES: Final[tuple[str, ...]] = ("ci", "staging")
DEFAULT_PROFILE: Final = "ci"

Kind = Literal["ratio", "seconds", "number", "count", "stages"]
ThresholdValue = float | int | tuple[int, ...]

_KIND_EXPECTED: Final[Mapping[str, str]] = {
    "ratio": "a ratio from 0 to 1, e.g. 0.999 or 99.9%",
    "seconds": "a duration in seconds >= 0, e.g. 2.0, 500ms, 30m, 1h",
    "number": "a number >= 0, e.g. 1024",
    "count": "a whole number >= 0, e.g. 150",
    "stages": "comma-separated whole numbers > 0, e.g. 10,25,50,100,150",
}

_DURATION_UNITS: Final[Mapping[str, float]] = {
    "ms": 0.001,
    "s": 1.0,
    "m": 60.0,
    "min": 60.0,
    "h": 3600.0,
    "d": 86400.0,
}
_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*(ms|s|min|m|h|d)?\s*$", re.I)


@dataclass(frozen=True)
class ThresholdSpec:
    """A known threshold: its kind, unit, per-profile default and how observations compare.

    `op` is the comparison an observation must satisfy (``p95 < p95_s_max``); it is None for
    settings that shape a run rather than judge it (stage lists, durations).
    """

    name: str
    kind: Kind
    unit: str
    default: ThresholdValue
    staging: ThresholdValue | None = None  # None: the same as the ci default
    op: Op | None = None
    criterion: str = ""  # the criterion name used by `check_threshold`
    help: str = ""

    def default_for(self, profile: str) -> ThresholdValue:
        if profile == "staging" and self.staging is not None:
            return self.staging
        return self.default

    @property
    def expected(self) -> str:
        return _KIND_EXPECTED[self.kind]

    def parse(self, text: str) -> ThresholdValue:
        """Parse a CLI/ini value; raises ValueError when it is not of this threshold's kind."""
        text = text.strip()
        if self.kind == "stages":
            parts = [p.strip() for p in text.split(",") if p.strip()]
            if not parts or not all(p.isdigit() and int(p) > 0 for p in parts):
                raise ValueError(text)
            return tuple(int(p) for p in parts)
        if self.kind == "count":
            if not text.isdigit():
                raise ValueError(text)
            return int(text)
        if self.kind == "seconds":
            match = _DURATION.match(text)
            if not match:
                raise ValueError(text)
            value = float(match.group(1)) * _DURATION_UNITS[(match.group(2) or "s").lower()]
        elif self.kind == "ratio" and text.endswith("%"):
            value = _finite_float(text[:-1]) / 100
        else:
            value = _finite_float(text)
        if value < 0 or (self.kind == "ratio" and value > 1):
            raise ValueError(text)
        return value


def _finite_float(text: str) -> float:
    value = float(text)  # ValueError for "fast"
    if not math.isfinite(value):
        raise ValueError(text)
    return value


# The report's success criteria (reference §3) and post-rollback alert thresholds (§2). Names
# are an interface: suites and users' ini files refer to them.
_SPECS: Final[tuple[ThresholdSpec, ...]] = (
    ThresholdSpec(
        "availability_min",
        "ratio",
        "",
        0.999,
        op=">",
        criterion="availability",
        help="share of health probes answered OK (report: > 99.9 %)",
    ),
    ThresholdSpec(
        "p95_s_max",
        "seconds",
        "s",
        2.0,
        op="<",
        criterion="p95",
        help="95th percentile response time (report: P95 < 2 s)",
    ),
    ThresholdSpec(
        "error_rate_max",
        "ratio",
        "",
        0.01,
        op="<",
        criterion="error_rate",
        help="share of failed requests, sustained (report: < 1 %)",
    ),
    ThresholdSpec(
        "concurrent_users_min",
        "count",
        "users",
        150,
        staging=500,
        op=">=",
        criterion="concurrent_users",
        help="users served at once (report: 150+)",
    ),
    ThresholdSpec(
        "isolation_breaches_max",
        "count",
        "",
        0,
        op="<=",
        criterion="isolation_breaches",
        help="cross-user leaks seen (report: 100 % isolation)",
    ),
    ThresholdSpec(
        "isolation_run_p95_s_max",
        "seconds",
        "s",
        10.0,
        op="<=",
        criterion="containment_p95",
        help="p95 of calm users' agent runs while others cancel, reconnect, fail and flood",
    ),
    ThresholdSpec(
        "isolation_cleanup_s_max",
        "seconds",
        "s",
        30.0,
        op="<=",
        criterion="cleanup",
        help="time for live sockets and contexts to fall back to their level at rest",
    ),
    ThresholdSpec(
        "isolation_detectable_leak_rate_max",
        "ratio",
        "",
        0.001,
        op="<=",
        criterion="detectable_leak_rate",
        help="the rarest leak (per payload) a run must be able to see with 95 % probability",
    ),
    ThresholdSpec(
        "isolation_rounds",
        "count",
        "rounds",
        3,
        staging=6,
        help="isolation rounds: one calm, the others with cancels, reconnects, failures",
    ),
    ThresholdSpec(
        "memory_variance_max",
        "ratio",
        "",
        0.05,
        op="<",
        criterion="memory_variance",
        help="relative memory variance over the soak (report: < 5 % over 24 h)",
    ),
    ThresholdSpec(
        "memory_slope_kb_per_h_max",
        "number",
        "KB/h",
        # What a compressed soak can resolve: a minute of samples pins a slope to about
        # +-20 MiB/h, so 1 MiB/h could only ever be inconclusive there. 24 h resolve it.
        131072.0,
        staging=1024.0,
        op="<=",
        criterion="memory_slope",
        help="least-squares memory growth after warm-up, upper 95 % bound (leak gate); ci's "
        "128 MiB/h is what a minute of samples can resolve",
    ),
    ThresholdSpec(
        "memory_warmup_s",
        "seconds",
        "s",
        10.0,
        staging=3600.0,
        help="memory samples this early in a soak are not judged (caches and pools filling)",
    ),
    ThresholdSpec(
        "memory_sample_s",
        "seconds",
        "s",
        1.0,
        staging=10.0,
        help="interval between two memory samples of each service",
    ),
    ThresholdSpec(
        "availability_probe_s",
        "seconds",
        "s",
        # The report's every second; a run too short to collect the 1,000 probes that
        # > 99.9 % needs at that pace probes faster (pytest_apex/suites/load_watch.py).
        1.0,
        help="longest interval between two health probes of each service under load",
    ),
    ThresholdSpec(
        "soak_users",
        "count",
        "users",
        25,
        staging=150,
        help="concurrent users of a soak (ci: held for `soak_duration_s`; staging: the peak)",
    ),
    ThresholdSpec(
        "success_rate_min",
        "ratio",
        "",
        0.95,
        op=">",
        criterion="success_rate",
        help="share of successful requests at every load stage (report: > 95 %)",
    ),
    ThresholdSpec(
        "avg_response_s_max",
        "seconds",
        "s",
        3.0,
        op="<",
        criterion="avg_response",
        help="mean response time at every load stage (report: < 3 s)",
    ),
    ThresholdSpec(
        "health_response_s_max",
        "seconds",
        "s",
        0.5,
        op="<=",
        criterion="health_response",
        help="time to answer a health endpoint",
    ),
    ThresholdSpec(
        "load_stages",
        "stages",
        "users",
        (10, 25, 50, 100, 150),
        help="concurrent users at each load stage",
    ),
    ThresholdSpec(
        "stage_duration_s",
        "seconds",
        "s",
        20.0,
        staging=3600.0,
        help="how long each load stage runs",
    ),
    ThresholdSpec(
        "load_think_s",
        "seconds",
        "s",
        1.0,
        help="pause of each virtual user between two of its sessions (a user reading)",
    ),
    ThresholdSpec(
        "load_window_s",
        "seconds",
        "s",
        10.0,
        staging=60.0,
        help="time window in which the load p95 must also hold, every window of every stage",
    ),
    ThresholdSpec(
        "prometheus_wait_s",
        "seconds",
        "s",
        15.0,
        help="how long the load suite waits for the app's monitoring to scrape and evaluate "
        "past a stage's end before it reads the server's view of the stage",
    ),
    ThresholdSpec(
        "load_agent_p95_s_max",
        "seconds",
        "s",
        10.0,
        op="<",
        criterion="agent_final_event p95",
        help="p95 of an agent run's time to its final WebSocket event, at every load stage",
    ),
    ThresholdSpec(
        "soak_duration_s",
        "seconds",
        "s",
        60.0,
        staging=86400.0,
        help="how long the soak runs",
    ),
    ThresholdSpec(
        "load_interval_s",
        "seconds",
        "s",
        0.0,
        staging=21600.0,
        help="the soak's staged load starts again every interval; 0: one held load",
    ),
    ThresholdSpec(
        "canary_users",
        "count",
        "users",
        8,
        staging=50,
        help="users of the rollback drill's short load stage, on the baseline and the candidate",
    ),
    ThresholdSpec(
        "canary_stage_s",
        "seconds",
        "s",
        8.0,
        staging=300.0,
        help="how long the drill's load stage runs on each release (and after a rollback)",
    ),
    ThresholdSpec(
        "canary_tolerance",
        "ratio",
        "",
        0.25,
        staging=0.10,
        help="how far the candidate's median latency may exceed the baseline's before a "
        "significant shift counts as a degradation (ci's seconds-long stages wobble more)",
    ),
    ThresholdSpec(
        "canary_min_shift_s",
        "seconds",
        "s",
        0.05,
        help="how much slower (median, absolute) the candidate must be to count as degraded",
    ),
    ThresholdSpec(
        "rollback_seed_users",
        "count",
        "users",
        6,
        staging=25,
        help="users whose rows the drill writes before and during the candidate, then checks",
    ),
    ThresholdSpec(
        "rollback_rto_s_max",
        "seconds",
        "s",
        60.0,
        op="<=",
        criterion="rto_s",
        help="from the decision to roll back until the baseline answers again (RTO)",
    ),
    ThresholdSpec(
        "rollback_p95_window_s",
        "seconds",
        "s",
        300.0,
        help="the post-rollback p95 alert must hold within this long after the rollback",
    ),
    ThresholdSpec(
        "rollback_error_window_s",
        "seconds",
        "s",
        600.0,
        help="the post-rollback error-rate alert must hold within this long after the rollback",
    ),
    ThresholdSpec(
        "rollback_memory_window_s",
        "seconds",
        "s",
        900.0,
        help="the post-rollback memory alert must hold within this long after the rollback",
    ),
    ThresholdSpec(
        "rollback_connections_window_s",
        "seconds",
        "s",
        300.0,
        help="the post-rollback connections alert must hold within this long after the rollback",
    ),
    ThresholdSpec(
        "rollback_p95_s_max",
        "seconds",
        "s",
        3.0,
        op="<=",
        criterion="p95",
        help="post-rollback p95 alert threshold",
    ),
    ThresholdSpec(
        "rollback_error_rate_max",
        "ratio",
        "",
        0.02,
        op="<=",
        criterion="error_rate",
        help="post-rollback error-rate alert threshold",
    ),
    ThresholdSpec(
        "rollback_memory_ratio_max",
        "ratio",
        "",
        0.75,
        op="<=",
        criterion="memory_ratio",
        help="post-rollback memory use / limit alert threshold",
    ),
    ThresholdSpec(
        "rollback_connections_max",
        "count",
        "connections",
        200,
        op="<=",
        criterion="connections",
        help="post-rollback active connections alert threshold",
    ),
)
THRESHOLDS: Final[Mapping[str, ThresholdSpec]] = MappingProxyType({s.name: s for s in _SPECS})


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


class Thresholds(Mapping[str, ThresholdValue]):
    """The thresholds in effect: profile defaults with overrides applied. Read-only.

    Index it like a mapping, or use the typed accessors, which also catch a suite asking for a
    number where the threshold is a stage list.
    """

    def __init__(
        self,
        values: Mapping[str, ThresholdValue],
        *,
        profile: str = DEFAULT_PROFILE,
        overridden: Iterable[str] = (),
    ) -> None:
        unknown = set(values) - set(THRESHOLDS)
        if unknown:
            raise KeyError(f"unknown thresholds: {', '.join(sorted(unknown))}")
        self._values: Mapping[str, ThresholdValue] = MappingProxyType(
            {name: values.get(name, spec.default_for(profile)) for name, spec in THRESHOLDS.items()}
        )
        self.profile = profile
        self.overridden: frozenset[str] = frozenset(overridden)

    @classmethod
    def defaults(cls, profile: str = DEFAULT_PROFILE) -> Thresholds:
        return cls({}, profile=profile)

    def __getitem__(self, name: str) -> ThresholdValue:
        try:
            return self._values[name]
        except KeyError:
            raise KeyError(
                f"unknown threshold {name!r}{did_you_mean(name, self._values)}"
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Thresholds(profile={self.profile!r}, overridden={sorted(self.overridden)})"

    def spec(self, name: str) -> ThresholdSpec:
        self[name]  # raises the helpful KeyError for unknown names
        return THRESHOLDS[name]

    def number(self, name: str) -> float:
        """Any scalar threshold as a float (ratios, seconds, counts)."""
        value = self[name]
        if isinstance(value, tuple):
            raise TypeError(f"threshold {name!r} is a list, not a number")
        return float(value)

    def seconds(self, name: str) -> float:
        if self.spec(name).kind != "seconds":
            raise TypeError(f"threshold {name!r} is not a duration")
        return self.number(name)

    def integer(self, name: str) -> int:
        value = self[name]
        if not isinstance(value, int):
            raise TypeError(f"threshold {name!r} is not a whole number")
        return value

    def stages(self, name: str = "load_stages") -> tuple[int, ...]:
        value = self[name]
        if not isinstance(value, tuple):
            raise TypeError(f"threshold {name!r} is not a stage list")
        return value

    def to_json(self) -> dict[str, float | int | list[int]]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self._values.items()}
