"""``python -m pytest_apex.rollback``: put the baseline release back, by hand or from the drill.

    python -m pytest_apex.rollback --project apex-manual \\
        --file fixtures/stack/docker-compose.staging.yml [--to v1] [--app apex.toml]

It reads the app description (``--app``, else the project's apex.toml / pyproject.toml,
else the reference stack's), deploys the release named by ``--to`` (default: the
description's baseline) with every fault switch off, and waits until the service's liveness
route answers as that release. It prints what it did and, last, one JSON line:
``{"release": "v1", "deploy_s": 4.2, "answered_s": 4.9}``. Exit 0 when the release answers,
1 when the deployment failed or never answered, 2 for a wrong command line or description.

The rollback suite runs exactly this command (`command_line`), so the procedure in
docs/rollback.md is what the drill proves.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import httpx

from pytest_apex.app import AppDescription, DescriptionError, find_description, load_description
from pytest_apex.rollback.deploy import (
    DeployError,
    address_env,
    deployer_for,
    fault_env,
    refuse_contract,
    release_reader,
    wait_for_release,
)
from pytest_apex.targets.compose import ComposeTarget
from pytest_apex.targets.errors import StackStartError

DEFAULT_TIMEOUT_S: Final = 120.0
PROGRAM: Final = "python -m pytest_apex.rollback"


def command_line(
    project: str, files: Sequence[Path | str], release: str, *, app: Path | str | None = None
) -> list[str]:
    """The rollback command's arguments after ``python -m pytest_apex.rollback``."""
    args = ["--project", project]
    for file in files:
        args += ["--file", str(file)]
    if app is not None:
        args += ["--app", str(app)]
    return [*args, "--to", release]


def shown(args: Sequence[str]) -> str:
    """The command as a person types it."""
    return f"{PROGRAM} {shlex.join(args)}"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROGRAM,
        description="Deploy the baseline release again and wait until it answers as itself.",
    )
    parser.add_argument("--project", required=True, help="the compose project name")
    parser.add_argument(
        "--file",
        action="append",
        required=True,
        type=Path,
        help="compose file, then its override files (repeat, in compose's order)",
    )
    parser.add_argument("--to", default="", help="the release to deploy (default: the baseline)")
    parser.add_argument("--app", type=Path, help="the app description (a TOML file)")
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds to wait for it"
    )
    return parser


def _description(explicit: Path | None) -> AppDescription:
    from pytest_apex.reference import reference_description

    data, source = find_description(Path.cwd(), explicit)
    return load_description(data, source) if source else reference_description()


def main(argv: Sequence[str] | None = None) -> int:
    options = _parser().parse_args(argv)
    try:
        app = _description(options.app)
    except DescriptionError as exc:
        print(f"rollback: {exc}", file=sys.stderr)
        return 2
    rollout = app.rollout
    if rollout is None:
        print(
            f"rollback: the app description ({app.source or 'the reference stack'}) has no "
            "[rollout] table: say which service rolls out and how each release deploys",
            file=sys.stderr,
        )
        return 2
    name = options.to or rollout.baseline
    if name not in rollout.releases:
        known = ", ".join(rollout.releases)
        print(f"rollback: no release {name!r} in rollout.releases ({known})", file=sys.stderr)
        return 2
    release = rollout.releases[name]
    compose_file, *overrides = options.file
    target = ComposeTarget(
        compose_file, options.project, override_files=overrides, port_schemes=app.port_schemes
    )
    started = time.monotonic()
    try:
        refuse_contract(rollout, release)
        print(f"rollback: deploying {name} of {rollout.service} in {options.project}", flush=True)
        # The address it has now, kept: users (and a drill's other tests) hold it.
        keep = address_env(rollout, _current_url(target, rollout.service))
        deployer_for(release, target).deploy(release, {**fault_env(app.faults, ()), **keep})
        deployed = time.monotonic() - started
        answered = deployed + _wait_until_it_answers(app, target, name, options.timeout)
    except (DeployError, StackStartError) as exc:
        print(f"rollback: {exc}", file=sys.stderr)
        return 1
    print(f"rollback: {rollout.service} answers as {name} after {answered:.1f} s", flush=True)
    print(json.dumps({"release": name, "deploy_s": round(deployed, 2), "answered_s": answered}))
    return 0


def _current_url(target: ComposeTarget, service: str) -> str:
    try:
        return target.endpoints().get(service, "")
    except StackStartError:
        return ""  # not running: it gets whichever port compose gives it


def _wait_until_it_answers(
    app: AppDescription, target: ComposeTarget, release: str, timeout_s: float
) -> float:
    rollout = app.rollout
    assert rollout is not None
    service = app.services[rollout.service]
    if service.liveness is None or not rollout.release_field:
        print(
            f"rollback: {rollout.service} has no liveness route naming its release "
            "(services.NAME.liveness, rollout.release_field): the release is not confirmed",
            flush=True,
        )
        return 0.0
    url = target.endpoints()[rollout.service]
    with httpx.Client(timeout=5.0) as client:
        read = release_reader(
            lambda address: client.get(address).json(),
            url,
            service.liveness.path,
            rollout.release_field,
        )
        return round(wait_for_release(read, release, timeout_s), 2)
