"""One resolved, validated settings object for the run: profile, thresholds, target.

Values come from three layers, later ones winning: the profile's defaults, the ini file
(``[tool.pytest.ini_options]``), the command line. Everything is checked once, at start-up:
an unknown profile, threshold name or fault, a malformed value or a missing compose file
raises `pytest.UsageError` naming the key and the accepted values, so a typo never turns
into a silently different test run.

This module reads no pytest objects except in `settings_from_pytest_config`; `resolve` takes
plain values so it can be tested (and reused) without a pytest session.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, Literal
from urllib.parse import urlsplit

import pytest

from pytest_apex.criteria import Op

PROFILES: Final[tuple[str, ...]] = ("ci", "staging")
DEFAULT_PROFILE: Final = "ci"
DEFAULT_REPORT: Final = ".apex/report.json"

# Fault switches the reference stack understands (passed to it as APEX_FAULTS). Each one
# plants a defect a suite must catch; see fixtures/stack/README.md.
KNOWN_FAULTS: Final[tuple[str, ...]] = (
    "shared_context",
    "broadcast_events",
    "unscoped_cache",
    "idor",
    "slow_responses",
    "error_burst",
    "memory_leak",
    "unready_db",
)

URL_SCHEMES: Final[tuple[str, ...]] = (
    "http",
    "https",
    "ws",
    "wss",
    "postgresql",
    "postgres",
    "redis",
    "rediss",
)

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
        1024.0,
        op="<=",
        criterion="memory_slope",
        help="least-squares memory growth after warm-up (leak gate)",
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
        help="how long each load stage runs (staging: 1 h)",
    ),
    ThresholdSpec(
        "soak_duration_s",
        "seconds",
        "s",
        60.0,
        staging=86400.0,
        help="how long the soak runs (staging: 24 h)",
    ),
    ThresholdSpec(
        "load_interval_s",
        "seconds",
        "s",
        0.0,
        staging=21600.0,
        help="pause between repeated load runs; 0 runs once (staging: every 6 h)",
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


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
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
                f"unknown threshold {name!r}{_did_you_mean(name, self._values)}"
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


@dataclass(frozen=True)
class ApexSettings:
    """Everything the plugin was told, resolved and checked. Built once per process."""

    profile: str = DEFAULT_PROFILE
    stack: Path | None = None  # compose file; None when no stack is configured
    urls: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    keep: bool = False
    reuse: bool = False
    report: Path = Path(DEFAULT_REPORT)
    thresholds: Thresholds = field(default_factory=Thresholds.defaults)
    faults: tuple[str, ...] = ()
    rootdir: Path = Path()

    @property
    def is_external(self) -> bool:
        """True when the suites test already-deployed URLs instead of a compose stack."""
        return bool(self.urls)

    @property
    def target_label(self) -> str:
        """A short description of the configured target, before anything is started."""
        if self.is_external:
            return "external"
        if self.stack is not None:
            return f"compose:{self.stack}"
        return "none"


settings_key = pytest.StashKey[ApexSettings]()


# --- resolving ------------------------------------------------------------------------------

# Option -> (CLI flag, ini name), for error messages that name exactly what the user typed.
OPTION_KEYS: Final[Mapping[str, tuple[str, str]]] = MappingProxyType(
    {
        "stack": ("--apex-stack", "apex_stack"),
        "urls": ("--apex-url", "apex_urls"),
        "profile": ("--apex-profile", "apex_profile"),
        "keep": ("--apex-keep", "apex_keep"),
        "reuse": ("--apex-reuse", "apex_reuse"),
        "report": ("--apex-report", "apex_report"),
        "thresholds": ("--apex-threshold", "apex_thresholds"),
        "faults": ("--apex-faults", "apex_faults"),
    }
)

Source = Literal["cli", "ini"]


@dataclass(frozen=True)
class RawOptions:
    """Unvalidated option values from one source; None (or empty) means "not given there".

    `base` is the directory relative paths from this source resolve against: the invocation
    directory for the command line, the ini file's directory for the ini file.
    """

    source: Source
    base: Path
    stack: str | None = None
    urls: Sequence[str] | None = None
    profile: str | None = None
    keep: bool | None = None
    reuse: bool | None = None
    report: str | None = None
    thresholds: Sequence[str] = ()
    faults: str | None = None

    def key(self, option: str) -> str:
        cli, ini = OPTION_KEYS[option]
        return cli if self.source == "cli" else ini


def _error(key: str, problem: str, accepted: str) -> pytest.UsageError:
    return pytest.UsageError(f"apex: {key}: {problem}; accepted: {accepted}")


def _pick(option: str, cli: RawOptions, ini: RawOptions) -> tuple[Any, RawOptions]:
    """The command line's value when given there, else the ini file's, with its source."""
    value = getattr(cli, option)
    if value is not None:
        return value, cli
    return getattr(ini, option), ini


def _resolve_profile(cli: RawOptions, ini: RawOptions) -> str:
    value, source = _pick("profile", cli, ini)
    profile = (value or DEFAULT_PROFILE).strip()
    if profile not in PROFILES:
        raise _error(
            source.key("profile"),
            f"unknown profile {profile!r}{_did_you_mean(profile, PROFILES)}",
            ", ".join(PROFILES),
        )
    return profile


def _resolve_urls(cli: RawOptions, ini: RawOptions) -> dict[str, str]:
    # The command line replaces the ini list as a whole: a target is one deployment, and
    # mixing services of two deployments would test neither.
    entries, source = (cli.urls, cli) if cli.urls else (ini.urls or (), ini)
    urls: dict[str, str] = {}
    for entry in entries:
        if not entry.strip():
            continue
        service, sep, url = entry.partition("=")
        service, url = service.strip(), url.strip()
        parts = urlsplit(url)
        if not sep or not service or not url:
            raise _error(
                source.key("urls"),
                f"{entry!r} is not SERVICE=URL",
                "SERVICE=URL, e.g. backend=https://staging.example.com",
            )
        if parts.scheme not in URL_SCHEMES or not parts.netloc:
            raise _error(
                source.key("urls"),
                f"{service}: {url!r} is not an absolute URL",
                f"URLs with scheme {', '.join(URL_SCHEMES)}, e.g. {service}=http://127.0.0.1:8000",
            )
        urls[service] = url.rstrip("/")
    return urls


def _resolve_path(value: str, base: Path) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


def _resolve_stack(cli: RawOptions, ini: RawOptions, external: bool) -> Path | None:
    value, source = _pick("stack", cli, ini)
    if not value:
        return None
    stack = _resolve_path(value, source.base)
    # An external target needs no compose file, so a stale ini entry must not block it.
    if not external and not stack.is_file():
        raise _error(
            source.key("stack"),
            f"compose file {str(stack)!r} does not exist",
            "the path of a docker compose file (relative to "
            + ("the current directory" if source.source == "cli" else "the ini file")
            + "), or --apex-url SERVICE=URL for an already-deployed stack",
        )
    return stack


def _parse_thresholds(source: RawOptions) -> dict[str, ThresholdValue]:
    values: dict[str, ThresholdValue] = {}
    key = source.key("thresholds")
    for entry in source.thresholds:
        if not entry.strip():
            continue
        name, sep, text = entry.partition("=")
        name = name.strip()
        if not sep:
            raise _error(key, f"{entry!r} is not NAME=VALUE", "NAME=VALUE, e.g. p95_s_max=1.5")
        spec = THRESHOLDS.get(name)
        if spec is None:
            raise _error(
                key,
                f"unknown threshold {name!r}{_did_you_mean(name, THRESHOLDS)}",
                ", ".join(THRESHOLDS),
            )
        try:
            values[name] = spec.parse(text)
        except ValueError:
            raise _error(
                f"{key} {name}", f"{text.strip()!r} is not valid for {name}", spec.expected
            ) from None
    return values


def _resolve_faults(cli: RawOptions, ini: RawOptions) -> tuple[str, ...]:
    value, source = _pick("faults", cli, ini)
    names = tuple(dict.fromkeys(f.strip() for f in (value or "").split(",") if f.strip()))
    for name in names:
        if name not in KNOWN_FAULTS:
            raise _error(
                source.key("faults"),
                f"unknown fault {name!r}{_did_you_mean(name, KNOWN_FAULTS)}",
                ", ".join(KNOWN_FAULTS),
            )
    return names


def resolve(cli: RawOptions, ini: RawOptions, *, rootdir: Path) -> ApexSettings:
    """Merge command line over ini over profile defaults, validating every value."""
    profile = _resolve_profile(cli, ini)
    urls = _resolve_urls(cli, ini)
    overrides = _parse_thresholds(ini) | _parse_thresholds(cli)
    report, report_source = _pick("report", cli, ini)
    reuse, reuse_source = _pick("reuse", cli, ini)
    faults = _resolve_faults(cli, ini)
    if reuse and faults:
        # A reused stack runs with the faults it was started with; accepting both would
        # report a fault drill that never happened.
        raise _error(
            reuse_source.key("reuse"),
            f"cannot switch faults ({','.join(faults)}) on a stack that is reused as it runs",
            "--apex-faults with a new stack, or --apex-reuse without --apex-faults",
        )
    return ApexSettings(
        profile=profile,
        stack=_resolve_stack(cli, ini, external=bool(urls)),
        urls=MappingProxyType(urls),
        keep=bool(_pick("keep", cli, ini)[0]),
        reuse=bool(reuse),
        report=_resolve_path(report or DEFAULT_REPORT, report_source.base if report else rootdir),
        thresholds=Thresholds(overrides, profile=profile, overridden=overrides),
        faults=faults,
        rootdir=rootdir,
    )


# --- pytest wiring --------------------------------------------------------------------------


def add_options(parser: pytest.Parser) -> None:
    """Register every option with its ini twin (called from the plugin's pytest_addoption)."""
    group = parser.getgroup("apex", "pytest-apex: prove a staging deployment")

    def option(
        flag: str, ini: str, help: str, ini_type: Literal["string", "bool", "linelist"], **kw: Any
    ) -> None:
        # CLI defaults are None so "not given" is distinguishable from a value: CLI wins only
        # when given, otherwise the ini twin (with pytest's own empty default) applies.
        group.addoption(flag, dest=ini, default=None, help=f"{help} [ini: {ini}]", **kw)
        parser.addini(ini, help=help, type=ini_type)

    option(
        "--apex-stack",
        "apex_stack",
        "docker compose file of the stack under test",
        "string",
        metavar="PATH",
    )
    option(
        "--apex-url",
        "apex_urls",
        "test an already-deployed stack: base URL of a service (repeatable; no Docker)",
        "linelist",
        metavar="SERVICE=URL",
        action="append",
    )
    option(
        "--apex-profile",
        "apex_profile",
        f"durations profile: {' or '.join(PROFILES)} (default {DEFAULT_PROFILE}); "
        "staging runs the report's 1 h stages and 24 h soak",
        "string",
        metavar="NAME",
    )
    option(
        "--apex-keep",
        "apex_keep",
        "leave the stack running after the session",
        "bool",
        action="store_true",
    )
    option(
        "--apex-reuse",
        "apex_reuse",
        "attach to a running stack instead of starting one",
        "bool",
        action="store_true",
    )
    option(
        "--apex-report",
        "apex_report",
        f"where to write the JSON verdict (default {DEFAULT_REPORT})",
        "string",
        metavar="PATH",
    )
    option(
        "--apex-threshold",
        "apex_thresholds",
        "override a threshold, e.g. p95_s_max=1.5 (repeatable; an unknown name lists them all)",
        "linelist",
        metavar="NAME=VALUE",
        action="append",
    )
    option(
        "--apex-faults",
        "apex_faults",
        f"comma-separated faults for the reference stack (APEX_FAULTS): {', '.join(KNOWN_FAULTS)}",
        "string",
        metavar="LIST",
    )


def settings_from_pytest_config(config: pytest.Config) -> ApexSettings:
    """Read the CLI and ini values of a pytest config and `resolve` them."""
    ini_base = config.inipath.parent if config.inipath else config.rootpath
    option = config.option
    cli = RawOptions(
        source="cli",
        base=config.invocation_params.dir,
        stack=option.apex_stack,
        urls=option.apex_urls,
        profile=option.apex_profile,
        keep=option.apex_keep,
        reuse=option.apex_reuse,
        report=option.apex_report,
        thresholds=option.apex_thresholds or (),
        faults=option.apex_faults,
    )
    ini_value: Callable[[str], Any] = config.getini
    ini = RawOptions(
        source="ini",
        base=ini_base,
        stack=ini_value("apex_stack") or None,
        urls=ini_value("apex_urls") or None,
        profile=ini_value("apex_profile") or None,
        keep=bool(ini_value("apex_keep")),
        reuse=bool(ini_value("apex_reuse")),
        report=ini_value("apex_report") or None,
        thresholds=ini_value("apex_thresholds") or (),
        faults=ini_value("apex_faults") or None,
    )
    return resolve(cli, ini, rootdir=config.rootpath)
