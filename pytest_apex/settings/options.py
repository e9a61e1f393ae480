"""pytest wiring: every option with its ini twin, and reading them from a pytest config.

`OPTIONS` is the catalogue: `add_options` registers it, and the README's option table is
rendered from it (`pytest_apex.settings.catalogue_doc`), so the two cannot drift apart.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Literal

import pytest

from pytest_apex.exitstatus import INCONCLUSIVE_EXIT
from pytest_apex.reference import FAULTS_ENV, KNOWN_FAULTS
from pytest_apex.settings.model import (
    DEFAULT_EXECUTOR,
    DEFAULT_INCONCLUSIVE,
    DEFAULT_LOAD_WORKERS,
    DEFAULT_REPORT,
    EXECUTORS,
    INCONCLUSIVE_POLICIES,
    ApexSettings,
)
from pytest_apex.settings.resolve import RawOptions, resolve
from pytest_apex.settings.thresholds import DEFAULT_PROFILE, PROFILES

IniType = Literal["string", "bool", "linelist"]


@dataclass(frozen=True)
class ApexOption:
    """One command-line option and its ini twin (the ini key is also the option's dest).

    Text may use Markdown code spans (backquotes): the README renders them, `pytest --help`
    shows the text without the backquotes. `default` documents what applies when neither the
    command line nor the ini file gives a value (the CLI default itself is None, see
    `add_options`); `details` is said in the README only, after the help.
    """

    flag: str
    ini: str
    help: str
    ini_type: IniType = "string"
    metavar: str | None = None
    choices: tuple[str, ...] = ()  # documented; `resolve` checks them with a helpful error
    repeatable: bool = False
    default: str = ""
    details: str = ""

    @property
    def action(self) -> str:
        if self.ini_type == "bool":
            return "store_true"
        return "append" if self.repeatable else "store"

    @property
    def shown_metavar(self) -> str | None:
        """What the option's value is called: its metavar, else its choices (``fail|pass``)."""
        if self.ini_type == "bool":
            return None
        return self.metavar or "|".join(self.choices) or None

    @property
    def help_text(self) -> str:
        """The help as `pytest --help` shows it, with the default."""
        text = self.help + (f" (default: {self.default})" if self.default else "")
        return text.replace("`", "")


OPTIONS: Final[tuple[ApexOption, ...]] = (
    ApexOption(
        "--apex-stack",
        "apex_stack",
        "docker compose file of the stack under test",
        metavar="PATH",
        details="this repository's pyproject.toml names the reference stack's",
    ),
    ApexOption(
        "--apex-url",
        "apex_urls",
        "test an already-deployed stack: base URL of a service (repeatable; no Docker)",
        "linelist",
        metavar="SERVICE=URL",
        repeatable=True,
        details="container checks skip with a reason; the command line's URLs replace the "
        "ini file's as a whole",
    ),
    ApexOption(
        "--apex-profile",
        "apex_profile",
        "durations profile: `staging` runs the report's durations (1 h per load stage, 24 h "
        "soak), `ci` the same criteria, short",
        choices=PROFILES,
        default=f"`{DEFAULT_PROFILE}`",
        details="it also picks each threshold's default (see the thresholds below)",
    ),
    ApexOption(
        "--apex-keep",
        "apex_keep",
        "leave the stack running after the session, and print how to reach and stop it",
        "bool",
    ),
    ApexOption(
        "--apex-reuse",
        "apex_reuse",
        "attach to a running stack (one left by `--apex-keep`) instead of starting one",
        "bool",
        details="it cannot be combined with `--apex-faults`, since a reused stack keeps the "
        "faults it was started with",
    ),
    ApexOption(
        "--apex-report",
        "apex_report",
        "where to write the JSON verdict, even when the run fails",
        metavar="PATH",
        default=f"`{DEFAULT_REPORT}`",
    ),
    ApexOption(
        "--apex-threshold",
        "apex_thresholds",
        "override a threshold by name, e.g. `p95_s_max=1.5` (repeatable); an unknown name "
        "stops the run and lists them all",
        "linelist",
        metavar="NAME=VALUE",
        repeatable=True,
        details="the names, units and defaults are in the thresholds table below",
    ),
    ApexOption(
        "--apex-faults",
        "apex_faults",
        "comma-separated fault switches of the app (its description's `[faults]`; the "
        f"reference stack's: {', '.join(f'`{f}`' for f in KNOWN_FAULTS)}); environment twin: "
        f"the app's fault variable (`{FAULTS_ENV}` for the reference stack), which the command "
        "line overrides and which overrides the ini",
        metavar="LIST",
        default="none",
    ),
    ApexOption(
        "--apex-app",
        "apex_app",
        "the app description: a TOML file with an `[app]` table, or a pyproject.toml with "
        "`[tool.pytest-apex.app]`",
        metavar="PATH",
        default="`apex.toml` or pyproject.toml's `[tool.pytest-apex.app]` beside the ini "
        "file, else the reference stack's",
        details='see "Your own app"',
    ),
    ApexOption(
        "--apex-inconclusive",
        "apex_inconclusive",
        "exit status of a run whose verdict is inconclusive (nothing failed, something could "
        f"not be judged): `fail` exits {INCONCLUSIVE_EXIT}, so a required CI check stays red "
        "when nothing was proven; `pass` exits 0; either way the report says inconclusive. A "
        "failed criterion exits 1",
        choices=INCONCLUSIVE_POLICIES,
        default=f"`{DEFAULT_INCONCLUSIVE}`",
    ),
    ApexOption(
        "--apex-seed",
        "apex_seed",
        "seed of the suites' random choices (which users pair up, who cancels, reconnects, "
        "fails on purpose or floods)",
        metavar="N",
        default="a new seed per run, printed and reported so the run can be repeated",
        details="it is printed as `isolation (repeat with --apex-seed=N)` and named in the "
        "criteria's failure text, so a failing run can be repeated exactly",
    ),
    ApexOption(
        "--apex-topology",
        "apex_topology",
        "deploy the app as one of the topologies its description names "
        "(`[app.topologies.NAME]`: compose override files, which service serves which, "
        "replicas expected); with `--apex-url` it only sets how many instances each service "
        "must show",
        metavar="NAME",
        default="the base stack",
        details="its override files join the compose project, and a service routed through "
        "another (a balancer in front of replicas) is reached on that one's published port. "
        "An unknown name stops the run and lists the known ones; the report header, the JSON "
        "verdict (`topology`) and Allure's environment name it",
    ),
    ApexOption(
        "--apex-load-workers",
        "apex_load_workers",
        "load generator processes for `-m load`: each runs its share of every stage's users, "
        "and their histograms merge exactly, so the p95 is that of every request and a "
        "machine with more cores pushes more load; with `--apex-executor ray`, also the "
        "actors the isolation suite deals its users over",
        metavar="N",
        default=f"`{DEFAULT_LOAD_WORKERS}`",
    ),
    ApexOption(
        "--apex-executor",
        "apex_executor",
        "where the load workers and the isolation suite's users run: this machine (`local`), "
        "or actors of a Ray cluster (`ray`, one per node, the optional extra "
        "`pytest-apex[ray]`), whose histograms and sightings merge exactly and whose "
        "thresholds are judged once, here",
        choices=EXECUTORS,
        default=f"`{DEFAULT_EXECUTOR}`",
        details="with `ray`, a worker that dies during a stage makes that stage inconclusive, "
        "naming its node, and an isolation share that dies makes the isolation run "
        "inconclusive; asking for `ray` without Ray installed stops the run at start",
    ),
    ApexOption(
        "--apex-ray-address",
        "apex_ray_address",
        "the Ray cluster for `--apex-executor ray`: `auto`, `ray://HOST:10001`, `HOST:PORT` "
        "of its head, or empty to start a Ray instance of this machine for the run",
        metavar="ADDRESS",
        default="empty: an instance of this machine, on 127.0.0.1",
        details="an address that does not answer stops the run at start, naming it",
    ),
    ApexOption(
        "--apex-decision-matrix",
        "apex_decision_matrix",
        "the rollback decision matrix: a TOML file merged over the shipped one, row by row "
        "(copy `pytest_apex/rollback/decision_matrix.toml` and keep what you change)",
        metavar="PATH",
        default="the shipped matrix",
        details="it is reference §2 as data, checked at start-up: a bad file stops the run "
        "naming the entry and field",
    ),
)


def add_options(parser: pytest.Parser) -> None:
    """Register every option with its ini twin (called from the plugin's pytest_addoption)."""
    group = parser.getgroup("apex", "pytest-apex: prove a staging deployment")
    for option in OPTIONS:
        kw: dict[str, Any] = {"action": option.action}
        if option.shown_metavar is not None:
            kw["metavar"] = option.shown_metavar
        # CLI defaults are None so "not given" is distinguishable from a value: CLI wins only
        # when given, otherwise the ini twin (with pytest's own empty default) applies.
        group.addoption(
            option.flag,
            dest=option.ini,
            default=None,
            help=f"{option.help_text} [ini: {option.ini}]",
            **kw,
        )
        parser.addini(option.ini, help=option.help_text, type=option.ini_type)


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
        executor=option.apex_executor,
        ray_address=option.apex_ray_address,
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
        executor=ini_value("apex_executor") or None,
        ray_address=ini_value("apex_ray_address") or None,
        decision_matrix=ini_value("apex_decision_matrix") or None,
    )
    return resolve(cli, ini, rootdir=config.rootpath, project_dir=ini_base, environ=os.environ)
