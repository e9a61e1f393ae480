"""pytest wiring: every option with its ini twin, and reading them from a pytest config."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Literal

import pytest

from pytest_apex.exitstatus import INCONCLUSIVE_EXIT
from pytest_apex.reference import FAULTS_ENV, KNOWN_FAULTS
from pytest_apex.settings.model import DEFAULT_REPORT, ApexSettings
from pytest_apex.settings.resolve import RawOptions, resolve
from pytest_apex.settings.thresholds import DEFAULT_PROFILE, PROFILES


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
        "comma-separated fault switches of the app (its description's [faults]; the "
        f"reference stack's: {', '.join(KNOWN_FAULTS)}); environment twin: the app's fault "
        f"variable ({FAULTS_ENV} for the reference stack), which wins over the ini",
        "string",
        metavar="LIST",
    )
    option(
        "--apex-app",
        "apex_app",
        "the app description (a TOML file with an [app] table, or a pyproject.toml with "
        "[tool.pytest-apex.app]); default: apex.toml or pyproject.toml beside the ini file, "
        "else the reference stack's",
        "string",
        metavar="PATH",
    )
    option(
        "--apex-inconclusive",
        "apex_inconclusive",
        "exit status of a run whose verdict is inconclusive (nothing failed, something could "
        f"not be judged): 'fail' (default) exits {INCONCLUSIVE_EXIT}, 'pass' exits 0; either "
        "way the report says inconclusive. A failed criterion exits 1",
        "string",
        metavar="fail|pass",
    )
    option(
        "--apex-seed",
        "apex_seed",
        "seed of the suites' random choices (which users pair up, cancel, reconnect); "
        "default: a new seed per run, printed and reported so the run can be repeated",
        "string",
        metavar="N",
    )
    option(
        "--apex-topology",
        "apex_topology",
        "deploy the app as one of the topologies its description names ([app.topologies."
        "NAME]: compose override files, which service serves which, replicas expected); with "
        "--apex-url it only sets how many instances each service must show",
        "string",
        metavar="NAME",
    )
    option(
        "--apex-load-workers",
        "apex_load_workers",
        "load generator processes for `-m load` (default 1); their histograms are merged "
        "exactly, so a machine with more cores pushes more load",
        "string",
        metavar="N",
    )
    option(
        "--apex-decision-matrix",
        "apex_decision_matrix",
        "the rollback decision matrix: a TOML file merged over the shipped one (copy "
        "pytest_apex/rollback/decision_matrix.toml and keep what you change); default: the "
        "shipped matrix",
        "string",
        metavar="PATH",
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
        app=option.apex_app,
        inconclusive=option.apex_inconclusive,
        seed=option.apex_seed,
        topology=option.apex_topology,
        load_workers=option.apex_load_workers,
        decision_matrix=option.apex_decision_matrix,
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
        app=ini_value("apex_app") or None,
        inconclusive=ini_value("apex_inconclusive") or None,
        seed=ini_value("apex_seed") or None,
        topology=ini_value("apex_topology") or None,
        load_workers=ini_value("apex_load_workers") or None,
        decision_matrix=ini_value("apex_decision_matrix") or None,
    )
    return resolve(cli, ini, rootdir=config.rootpath, project_dir=ini_base, environ=os.environ)
