"""Deploying a release, and knowing which release answers.

A release is deployed the way its description says (`pytest_apex.app.Release`): on a
compose target by setting its compose variables and recreating its services (a migration
job first), elsewhere by running its command. The same code serves the drill and the
rollback command a person runs by hand (``python -m pytest_apex.rollback``), so what the
suite proves is what the procedure does.

A deployment is done when the service answers *as the release*: its liveness route names
the release (`release_field`), so a deploy that left the old containers running, or a
balancer still sending traffic to them, is not taken for a rollback. Without such a field
the release cannot be confirmed, and the wait says so instead of passing.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

from pytest_apex.app.model import FaultSwitches, Release, Rollout
from pytest_apex.jsonpath import dig

_COMMAND_TIMEOUT_S = 300.0


class DeployError(RuntimeError):
    """A release could not be deployed, or never answered as itself."""


class ContractRefused(DeployError):
    """A release whose migration contracts the schema, while an older one may return."""


class Recreatable(Protocol):
    """A target that redeploys services with new compose variables (`ComposeTarget`)."""

    def recreate(self, services: Sequence[str], env: Mapping[str, str]) -> None: ...


class Deployer(Protocol):
    """Deploys a release with extra variables (fault switches); returns when it is up."""

    def deploy(self, release: Release, env: Mapping[str, str]) -> None: ...


@dataclass
class ComposeDeployer:
    """Sets the release's compose variables and recreates its services, in order."""

    target: Recreatable

    def deploy(self, release: Release, env: Mapping[str, str]) -> None:
        if not release.recreate:
            raise DeployError(
                f"release {release.name} gives no compose services to recreate "
                "(rollout.releases.NAME.recreate)"
            )
        self.target.recreate(release.recreate, {**release.env, **env})


def _run(argv: Sequence[str], env: Mapping[str, str], timeout: float) -> tuple[int, str]:
    done = subprocess.run(
        list(argv), env={**os.environ, **env}, capture_output=True, timeout=timeout, check=False
    )
    return done.returncode, (done.stderr or done.stdout).decode(errors="replace")


RunCommand = Callable[[Sequence[str], Mapping[str, str], float], tuple[int, str]]


@dataclass
class CommandDeployer:
    """Runs the release's command (``{release}`` replaced), with its variables set."""

    run: RunCommand = _run
    timeout_s: float = _COMMAND_TIMEOUT_S

    def deploy(self, release: Release, env: Mapping[str, str]) -> None:
        if not release.command:
            raise DeployError(f"release {release.name} gives no command (rollout.releases.NAME)")
        argv = [part.replace("{release}", release.name) for part in release.command]
        status, said = self.run(argv, {**release.env, **env}, self.timeout_s)
        if status != 0:
            raise DeployError(
                f"deploying {release.name}: `{' '.join(argv)}` exited {status}:\n{said[-2000:]}"
            )


def deployer_for(release: Release, target: object) -> Deployer:
    """The command when the release has one, else the target's own recreation."""
    if release.command:
        return CommandDeployer()
    if callable(getattr(target, "recreate", None)):
        # target is any object: its recreate() is checked just above, not by its type.
        return ComposeDeployer(target)  # type: ignore[arg-type]
    raise DeployError(
        f"release {release.name} is deployed by recreating compose services, but the target "
        f"({getattr(target, 'name', target)}) is not a compose project: give the release a "
        "`command` in rollout.releases"
    )


def fault_env(faults: FaultSwitches | None, switched: Sequence[str]) -> dict[str, str]:
    """The app's fault variable set to exactly `switched` (empty: none), when it has one."""
    if faults is None:
        if switched:
            raise DeployError(
                f"faults {', '.join(switched)} asked for, but the app describes no fault switches"
            )
        return {}
    return {faults.env: ",".join(sorted(switched))}


def refuse_contract(rollout: Rollout, release: Release) -> None:
    """A contract step removes what the baseline needs: never while it may come back."""
    if release.schema == "contract":
        raise ContractRefused(
            f"release {release.name} contracts the schema (rollout.releases.{release.name}"
            f'.schema = "contract"): the baseline {rollout.baseline} could no longer run on '
            f"it, so a rollback would fail. Deploy it only once {rollout.baseline} can no "
            "longer be rolled back to, as a release of its own."
        )


def address_env(rollout: Rollout, url: str) -> dict[str, str]:
    """The variable that keeps the service at `url`'s port across a redeploy ({} if none)."""
    port = urlsplit(url).port if url else None
    return {rollout.port_env: str(port)} if rollout.port_env and port else {}


ReadRelease = Callable[[], str]


def release_reader(
    get_json: Callable[[str], object], base_url: str, path: str, field: str
) -> ReadRelease:
    """Reads `field` of the liveness answer at `base_url + path` (an error: "")."""

    def read() -> str:
        try:
            found = dig(get_json(base_url.rstrip("/") + path), field)
        except Exception:  # any failure to answer is "not yet"
            return ""
        return "" if found is None else str(found)

    return read


def wait_for_release(
    read: ReadRelease,
    wanted: str,
    timeout_s: float,
    *,
    clock: Callable[[], float] = time.monotonic,
    pause: Callable[[float], None] = time.sleep,
    interval_s: float = 0.1,
) -> float:
    """Seconds until `read()` names `wanted`; raises `DeployError` at the deadline, saying
    what answered instead."""
    started = clock()
    last = ""
    while True:
        last = read()
        if last == wanted:
            return clock() - started
        if clock() - started >= timeout_s:
            seen = f"release {last!r}" if last else "no answer naming a release"
            raise DeployError(
                f"release {wanted} did not answer within {timeout_s:g} s (last seen: {seen})"
            )
        pause(interval_s)  # a polling interval, bounded by the deadline above
