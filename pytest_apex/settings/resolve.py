"""Resolving settings: command line over ini over profile defaults, every value validated.

An unknown profile, threshold name or fault, a malformed value or a missing compose file
raises `pytest.UsageError` naming the key and the accepted values, so a typo never turns into
a silently different test run. This module reads no pytest objects: `resolve` takes plain
values so it can be tested (and reused) without a pytest session.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, Literal, cast
from urllib.parse import urlsplit

import pytest

from pytest_apex.app import AppDescription, DescriptionError, find_description, load_description
from pytest_apex.reference import reference_description
from pytest_apex.rollback.matrix import DecisionMatrix, MatrixError
from pytest_apex.settings.model import (
    DEFAULT_EXECUTOR,
    DEFAULT_INCONCLUSIVE,
    DEFAULT_LOAD_WORKERS,
    DEFAULT_REPORT,
    EXECUTORS,
    INCONCLUSIVE_POLICIES,
    ApexSettings,
    Executor,
    InconclusivePolicy,
)
from pytest_apex.settings.thresholds import (
    DEFAULT_PROFILE,
    PROFILES,
    THRESHOLDS,
    Thresholds,
    ThresholdValue,
    did_you_mean,
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
        "app": ("--apex-app", "apex_app"),
        "inconclusive": ("--apex-inconclusive", "apex_inconclusive"),
        "seed": ("--apex-seed", "apex_seed"),
        "topology": ("--apex-topology", "apex_topology"),
        "load_workers": ("--apex-load-workers", "apex_load_workers"),
        "executor": ("--apex-executor", "apex_executor"),
        "ray_address": ("--apex-ray-address", "apex_ray_address"),
        "decision_matrix": ("--apex-decision-matrix", "apex_decision_matrix"),
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
    app: str | None = None
    inconclusive: str | None = None
    seed: str | None = None
    topology: str | None = None
    load_workers: str | None = None
    executor: str | None = None
    ray_address: str | None = None
    decision_matrix: str | None = None

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


def _choice(
    option: str, what: str, cli: RawOptions, ini: RawOptions, default: str, choices: Sequence[str]
) -> str:
    """The option's value, one of `choices` (an unknown one is refused, with a suggestion)."""
    value, source = _pick(option, cli, ini)
    chosen = (value or default).strip()
    if chosen not in choices:
        raise _error(
            source.key(option),
            f"unknown {what} {chosen!r}{did_you_mean(chosen, choices)}",
            ", ".join(choices),
        )
    return chosen


def _resolve_profile(cli: RawOptions, ini: RawOptions) -> str:
    return _choice("profile", "profile", cli, ini, DEFAULT_PROFILE, tuple(PROFILES))


def _resolve_inconclusive(cli: RawOptions, ini: RawOptions) -> InconclusivePolicy:
    policy = _choice("inconclusive", "value", cli, ini, DEFAULT_INCONCLUSIVE, INCONCLUSIVE_POLICIES)
    return cast(InconclusivePolicy, policy)


def _resolve_seed(cli: RawOptions, ini: RawOptions) -> int | None:
    value, source = _pick("seed", cli, ini)
    if value is None or not str(value).strip():
        return None
    try:
        return int(str(value).strip())
    except ValueError:
        raise _error(source.key("seed"), f"not an integer: {value!r}", "an integer") from None


def _resolve_load_workers(cli: RawOptions, ini: RawOptions) -> int:
    value, source = _pick("load_workers", cli, ini)
    text = str(value).strip() if value is not None else ""
    if not text:
        return DEFAULT_LOAD_WORKERS
    if not text.isdigit() or int(text) < 1:
        raise _error(
            source.key("load_workers"),
            f"not a whole number >= 1: {value!r}",
            "the number of load generator processes, e.g. 2 (one per spare core)",
        )
    return int(text)


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _resolve_executor(
    cli: RawOptions, ini: RawOptions, has_module: Callable[[str], bool]
) -> Executor:
    executor = _choice("executor", "executor", cli, ini, DEFAULT_EXECUTOR, EXECUTORS)
    if executor == "ray" and not has_module("ray"):
        # Said now, not after the stack came up: the extra is what is missing.
        raise _error(
            _pick("executor", cli, ini)[1].key("executor"),
            "ray needs Ray, which is not installed in this environment",
            "local, or install the extra first: pip install 'pytest-apex[ray]'",
        )
    return cast(Executor, executor)


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
                f"unknown threshold {name!r}{did_you_mean(name, THRESHOLDS)}",
                ", ".join(THRESHOLDS),
            )
        try:
            values[name] = spec.parse(text)
        except ValueError:
            raise _error(
                f"{key} {name}", f"{text.strip()!r} is not valid for {name}", spec.expected
            ) from None
    return values


def _resolve_app(cli: RawOptions, ini: RawOptions, project_dir: Path) -> AppDescription:
    """The app under test: the description named by --apex-app / apex_app, else the project's
    own (``apex.toml`` or ``[tool.pytest-apex.app]`` in pyproject.toml), else the reference
    stack's."""
    value, source = _pick("app", cli, ini)
    explicit = _resolve_path(value, source.base) if value else None
    key = source.key("app") if value else "app description"
    try:
        data, found_in = find_description(project_dir, explicit)
        return load_description(data, found_in) if found_in else reference_description()
    except DescriptionError as exc:
        raise pytest.UsageError(f"apex: {key}: {exc}") from None


def _resolve_faults(
    cli: RawOptions, ini: RawOptions, app: AppDescription, environ: Mapping[str, str]
) -> tuple[str, ...]:
    """The fault switches to turn on: command line, else the app's own fault variable in the
    environment, else the ini file.

    The app's variable is the environment twin (the reference stack's README documents
    ``APEX_FAULTS=idor pytest ...``): it must mean the same to the plugin as to the app, and
    never be silently replaced by an empty list. Set but empty, it means "no faults".
    """
    variable = app.faults.env if app.faults else ""
    value: str | None
    if cli.faults is not None:
        value, key = cli.faults, cli.key("faults")
    elif variable and variable in environ:
        value, key = environ[variable], f"{variable} (environment)"
    else:
        value, key = ini.faults, ini.key("faults")
    names = tuple(dict.fromkeys(f.strip() for f in (value or "").split(",") if f.strip()))
    known = app.faults.known if app.faults else ()
    for name in names:
        if name not in known:
            raise _error(
                key,
                f"unknown fault {name!r}{did_you_mean(name, known)}",
                ", ".join(known)
                or f"none: the app description of {app.name} declares no fault switches",
            )
    return names


def _resolve_topology(cli: RawOptions, ini: RawOptions, app: AppDescription) -> str:
    """The topology to deploy (compose) or expect (external URLs): one the app describes."""
    value, source = _pick("topology", cli, ini)
    name = (value or "").strip()
    if name and name not in app.topologies:
        known = sorted(app.topologies)
        raise _error(
            source.key("topology"),
            f"unknown topology {name!r}{did_you_mean(name, known)}",
            ", ".join(known)
            or f"none: the app description of {app.name} declares no topologies "
            "([app.topologies.NAME])",
        )
    return name


def _resolve_decision_matrix(cli: RawOptions, ini: RawOptions) -> DecisionMatrix:
    """The shipped decision matrix, or the file named by the command line or the ini file
    merged over it; a file that cannot be used stops the run before anything is deployed."""
    value, source = _pick("decision_matrix", cli, ini)
    if not value or not str(value).strip():
        return DecisionMatrix.default()
    try:
        return DecisionMatrix.load(_resolve_path(str(value).strip(), source.base))
    except MatrixError as exc:
        raise _error(
            source.key("decision_matrix"),
            str(exc),
            "a TOML decision matrix (relative to "
            + ("the current directory" if source.source == "cli" else "the ini file")
            + "); copy pytest_apex/rollback/decision_matrix.toml and keep what you change",
        ) from None


def resolve(
    cli: RawOptions,
    ini: RawOptions,
    *,
    rootdir: Path,
    project_dir: Path | None = None,
    environ: Mapping[str, str] | None = None,
    has_module: Callable[[str], bool] = installed,
) -> ApexSettings:
    """Merge command line over environment twins over ini over defaults, validating all.

    `project_dir` is where the project's own app description is looked for (the ini file's
    directory; `rootdir` when not given).
    """
    app = _resolve_app(cli, ini, project_dir or rootdir)
    profile = _resolve_profile(cli, ini)
    urls = _resolve_urls(cli, ini)
    overrides = _parse_thresholds(ini) | _parse_thresholds(cli)
    report, report_source = _pick("report", cli, ini)
    reuse, reuse_source = _pick("reuse", cli, ini)
    faults = _resolve_faults(cli, ini, app, environ or {})
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
        inconclusive=_resolve_inconclusive(cli, ini),
        seed=_resolve_seed(cli, ini),
        rootdir=rootdir,
        app=app,
        topology=_resolve_topology(cli, ini, app),
        load_workers=_resolve_load_workers(cli, ini),
        executor=_resolve_executor(cli, ini, has_module),
        ray_address=str(_pick("ray_address", cli, ini)[0] or "").strip(),
        decision_matrix=_resolve_decision_matrix(cli, ini),
    )
