"""The compose target: a stack brought up with testcontainers' `DockerCompose`.

testcontainers runs `docker compose up --build --wait`, which relies on the compose file's
health checks. What it does not do, and this module adds (reference §4): a project name per
run (it has no parameter for one), an environment per run (fault switches, ports), an
injectable command runner, service-level diagnosis when the stack does not come up, and
progress while it does.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from functools import cached_property
from pathlib import Path
from subprocess import CalledProcessError, CompletedProcess
from typing import Any

from testcontainers.compose import DockerCompose

from pytest_apex.targets.base import ContainerInfo
from pytest_apex.targets.errors import DockerUnavailable, ServiceDiagnosis, StackStartError
from pytest_apex.targets.runner import CommandRunner, SubprocessRunner

ProgressCallback = Callable[[str], None]

# Container ports whose published address is not HTTP.
_SCHEMES = {5432: "postgresql", 6379: "redis"}
_UP_TIMEOUT_S = 900.0  # a cold build of the reference stack takes about two minutes
_POLL_INTERVAL_S = 1.0
_STILL_WAITING_EVERY_S = 10.0


class _ProjectCompose(DockerCompose):
    """`DockerCompose` with a project name, a per-run environment and our command runner."""

    def __init__(
        self,
        compose_file: Path,
        project: str,
        env: Mapping[str, str],
        runner: CommandRunner,
    ) -> None:
        super().__init__(
            context=str(compose_file.parent),
            compose_file_name=compose_file.name,
            build=True,
            wait=True,
        )
        self.project = project
        self.env = dict(env)
        self.runner = runner

    @cached_property
    def compose_command_property(self) -> list[str]:
        base = super().compose_command_property
        return [base[0], base[1], "--project-name", self.project, *base[2:]]

    def _run_command(
        self, cmd: str | list[str], context: str | None = None
    ) -> CompletedProcess[bytes]:
        args = cmd.split() if isinstance(cmd, str) else cmd
        result = self.runner(
            args, cwd=context or str(self.context), env=self.env, timeout=_UP_TIMEOUT_S
        )
        if result.returncode != 0:
            raise CalledProcessError(result.returncode, args, result.stdout, result.stderr)
        return result


class ComposeTarget:
    """A compose project of this run (or one kept from an earlier run, when reused)."""

    def __init__(
        self,
        compose_file: Path,
        project: str,
        *,
        env: Mapping[str, str] | None = None,
        runner: CommandRunner | None = None,
        progress: ProgressCallback | None = None,
    ) -> None:
        self.compose_file = compose_file.resolve()
        self.project = project
        self.env = dict(env or {})
        self.runner: CommandRunner = runner or SubprocessRunner()
        self.progress: ProgressCallback = progress or (lambda _line: None)
        self._compose = _ProjectCompose(self.compose_file, project, self.env, self.runner)
        self._endpoints: dict[str, str] | None = None
        self._config: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        return f"compose:{self.project}"

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Build and start the stack; return once every service is healthy."""
        self.check_engine()
        self.validate()
        self.progress(f"starting stack {self.project} from {self.compose_file}")
        started = time.monotonic()
        watcher = _StateWatcher(self, self.progress)
        watcher.start()
        try:
            self._compose.start()
        except CalledProcessError as exc:
            watcher.stop()
            output = _text(exc.stderr) + _text(exc.stdout)
            raise StackStartError(
                f"stack {self.project} ({self.compose_file}) did not become healthy",
                self.diagnose(),
                output,
            ) from None
        finally:
            watcher.stop()
        self.progress(f"stack {self.project} healthy in {time.monotonic() - started:.1f} s")

    def stop(self) -> None:
        self._run(["down", "--volumes", "--remove-orphans", "--timeout", "5"], check=False)
        self._endpoints = None

    def recreate(self, services: Sequence[str], env: Mapping[str, str]) -> None:
        """Recreate some services with a changed environment (e.g. fault switches)."""
        self.env.update(env)
        self._compose.env = dict(self.env)
        self._run(["up", "--detach", "--wait", "--no-deps", "--force-recreate", *services])
        self._endpoints = None

    def check_engine(self) -> None:
        result = self.runner(["docker", "version", "--format", "{{.Server.Version}}"], timeout=30)
        if result.returncode != 0:
            raise DockerUnavailable(
                "the Docker engine is not reachable ("
                + (_text(result.stderr).strip() or "no answer")
                + "). Start it (`make setup` does on Debian) or use --apex-url for a "
                "deployed stack."
            )
        compose = self.runner(["docker", "compose", "version", "--short"], timeout=30)
        if compose.returncode != 0:
            raise DockerUnavailable(
                "the Docker Compose v2 plugin is missing (`docker compose version` failed). "
                "Install docker-compose-plugin (on Debian 12: `make setup`)."
            )

    def validate(self) -> None:
        if not self.compose_file.is_file():
            raise StackStartError(f"compose file not found: {self.compose_file}")
        result = self.runner(
            [*self._compose.compose_command_property, "config", "--quiet"],
            cwd=str(self.compose_file.parent),
            env=self.env,
            timeout=60,
        )
        if result.returncode != 0:
            raise StackStartError(
                f"compose file {self.compose_file} is invalid:\n{_text(result.stderr).strip()}"
            )

    # -- what the suites read --------------------------------------------------------------

    def endpoints(self) -> dict[str, str]:
        if self._endpoints is None:
            found: dict[str, str] = {}
            for entry in self._ps():
                for pub in entry.get("Publishers") or []:
                    host_port = pub.get("PublishedPort") or 0
                    if not host_port:
                        continue
                    target = int(pub.get("TargetPort") or 0)
                    scheme = _SCHEMES.get(target, "http")
                    host = pub.get("URL") or "127.0.0.1"
                    host = "127.0.0.1" if host in ("0.0.0.0", "") else host
                    found.setdefault(entry["Service"], f"{scheme}://{host}:{host_port}")
            self._endpoints = found
        return dict(self._endpoints)

    def containers(self) -> list[ContainerInfo]:
        ids = {entry["ID"]: entry["Service"] for entry in self._ps(all_states=True)}
        if not ids:
            return []
        result = self.runner(["docker", "inspect", *ids], timeout=60)
        if result.returncode != 0:
            return []
        return [_container_info(_service_of(info), info) for info in json.loads(result.stdout)]

    def logs(self, service: str, tail: int = 200) -> str:
        result = self._run(["logs", "--no-color", "--tail", str(tail), service], check=False)
        return _text(result.stdout) + _text(result.stderr)

    def environment(self, service: str) -> dict[str, str]:
        """The service's environment as compose resolves it (env_file entries included)."""
        if self._config is None:
            result = self._run(["config", "--format", "json"], check=False)
            self._config = json.loads(result.stdout or b"{}") if result.returncode == 0 else {}
        spec = self._config.get("services", {}).get(service, {})
        return {k: "" if v is None else str(v) for k, v in (spec.get("environment") or {}).items()}

    def image_ids(self) -> dict[str, str]:
        return {c.service: c.image_id for c in self.containers()}

    def diagnose(self) -> list[ServiceDiagnosis]:
        """Every service that is not running-and-healthy, with its health output and logs."""
        diagnoses = []
        for entry in self._ps(all_states=True):
            state, health = entry.get("State", ""), entry.get("Health", "")
            if state == "running" and health in ("", "healthy"):
                continue
            diagnoses.append(
                ServiceDiagnosis(
                    service=entry["Service"],
                    state=state,
                    health=health,
                    health_output=self._health_output(entry["ID"]),
                    log_tail=self.logs(entry["Service"], tail=40),
                )
            )
        return diagnoses

    # -- helpers ---------------------------------------------------------------------------

    def _ps(self, all_states: bool = False) -> list[dict[str, Any]]:
        args = ["ps", "--format", "json", *(["--all"] if all_states else [])]
        result = self._run(args, check=False)
        return _parse_ps(_text(result.stdout))

    def _health_output(self, container_id: str) -> str:
        result = self.runner(
            ["docker", "inspect", "--format", "{{json .State.Health}}", container_id], timeout=30
        )
        try:
            health = json.loads(result.stdout or b"null") or {}
        except json.JSONDecodeError:
            return ""
        return "\n".join(
            f"exit {entry.get('ExitCode')}: {entry.get('Output', '').strip()}"
            for entry in (health.get("Log") or [])[-3:]
        )

    def _run(self, args: Sequence[str], check: bool = True) -> CompletedProcess[bytes]:
        cmd = [*self._compose.compose_command_property, *args]
        result = self.runner(
            cmd, cwd=str(self.compose_file.parent), env=self.env, timeout=_UP_TIMEOUT_S
        )
        if check and result.returncode != 0:
            raise StackStartError(
                f"`docker compose {' '.join(args)}` failed for {self.project}",
                self.diagnose() if "up" in args else [],
                _text(result.stderr),
            )
        return result


class _StateWatcher:
    """Reports each service's state as it changes while `up --wait` blocks."""

    def __init__(self, target: ComposeTarget, progress: ProgressCallback) -> None:
        self.target = target
        self.progress = progress
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="apex-compose-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        seen: dict[str, str] = {}
        started = last_news = time.monotonic()
        while not self._stop.wait(_POLL_INTERVAL_S):
            now = time.monotonic()
            for entry in self.target._ps(all_states=True):
                state = entry.get("Health") or entry.get("State", "?")
                service = entry.get("Service", "?")
                if seen.get(service) != state:
                    before = seen.get(service, "created")
                    seen[service] = state
                    last_news = now
                    self.progress(f"  {service}: {before} -> {state} ({now - started:.1f} s)")
            if now - last_news >= _STILL_WAITING_EVERY_S:
                last_news = now
                waiting = sorted(s for s, st in seen.items() if st != "healthy") or ["images"]
                self.progress(
                    f"  still waiting ({now - started:.0f} s): building or starting "
                    + ", ".join(waiting)
                )


def _service_of(inspect: Mapping[str, Any]) -> str:
    labels = inspect.get("Config", {}).get("Labels") or {}
    return str(labels.get("com.docker.compose.service", inspect.get("Name", "").lstrip("/")))


def _container_info(service: str, inspect: Mapping[str, Any]) -> ContainerInfo:
    host_config = inspect.get("HostConfig", {}) or {}
    state = inspect.get("State", {}) or {}
    published = []
    for port_proto, bindings in (inspect.get("NetworkSettings", {}).get("Ports") or {}).items():
        for binding in bindings or []:
            published.append(
                (
                    binding.get("HostIp", ""),
                    int(binding.get("HostPort") or 0),
                    int(port_proto.split("/")[0]),
                )
            )
    return ContainerInfo(
        service=service,
        container_id=inspect.get("Id", ""),
        image_id=inspect.get("Image", ""),
        state=state.get("Status", ""),
        health=(state.get("Health") or {}).get("Status", ""),
        user=inspect.get("Config", {}).get("User", "") or "",
        memory_limit_bytes=int(host_config.get("Memory") or 0),
        nano_cpus=int(host_config.get("NanoCpus") or 0),
        published=tuple(published),
    )


def _parse_ps(text: str) -> list[dict[str, Any]]:
    """`docker compose ps --format json` prints one object per line (or one array, in 2.2x)."""
    entries: list[dict[str, Any]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        data = json.loads(line)
        entries.extend(data if isinstance(data, list) else [data])
    return entries


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data.decode("utf-8", "replace") if isinstance(data, bytes) else data
