"""The compose target: a stack brought up with testcontainers' `DockerCompose`.

testcontainers runs `docker compose up --build --wait`, which relies on the compose file's
health checks, and lists, configures and executes through its public API
(`get_containers`, `get_config`, `exec_in_container`). What it does not do, and this module
adds (reference §4): a project name per run (it has no parameter for one), an environment
per run (fault switches, ports), timeouts, an injectable command runner, service-level
diagnosis when the stack does not come up, and progress while it does.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from functools import cached_property
from pathlib import Path
from subprocess import CalledProcessError, CompletedProcess, TimeoutExpired
from typing import Any

from testcontainers.compose import ComposeContainer, DockerCompose
from testcontainers.compose.compose import PublishedPortModel

from pytest_apex.redaction import redact
from pytest_apex.targets.base import ContainerInfo, ServedBy
from pytest_apex.targets.errors import (
    ContainerQueryError,
    DockerUnavailable,
    ServiceDiagnosis,
    StackStartError,
)
from pytest_apex.targets.runner import CommandRunner, SubprocessRunner

ProgressCallback = Callable[[str], None]

_UP_TIMEOUT_S = 900.0  # a cold build of the reference stack takes about two minutes
# `up --wait` alone waits forever for a health check that stays "starting" (a long
# start_period, a check that hangs); past this it gives up and we diagnose instead.
_WAIT_TIMEOUT_S = 300
_POLL_INTERVAL_S = 1.0
_STILL_WAITING_EVERY_S = 5.0  # "any step longer than a few seconds shows a live status line"
PROJECT_LABEL = "com.docker.compose.project"
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class _ProjectCompose(DockerCompose):
    """`DockerCompose` with a project name, a per-run environment and our command runner.

    Everything the target asks compose goes through testcontainers' public API (`start`,
    `get_containers`, `get_config`, `exec_in_container`); what it lacks is supplied at
    its one command seam, `_run_command`, which this class overrides. That private method
    is overridden, and testcontainers pinned below 5 (pyproject.toml), because of exactly
    these missing features of `DockerCompose` 4.x (up to 4.15, the newest):

    - no timeout: it runs every command with `subprocess.run` and none, so a hung engine
      hangs the run for good; ours come from the runner (`CommandTimedOut`) and bound
      the start and every query;
    - no wait timeout: `start()` runs `up --wait` without `--wait-timeout`, which waits
      forever for a health check that stays "starting"; `wait_timeout` is added here;
    - no environment per instance: it inherits `os.environ`, so two stacks in one process
      (the run's and the fault proofs') could not get different fault switches; `env`
      goes to each command here;
    - no project name (reference §4): `--project-name` is added to its command line;
    - no runner seam: the unit tests script the engine through `CommandRunner`.
    """

    def __init__(
        self,
        compose_file: Path,
        project: str,
        env: Mapping[str, str],
        runner: CommandRunner,
        override_files: Sequence[Path] = (),
    ) -> None:
        super().__init__(
            context=str(compose_file.parent),
            compose_file_name=[compose_file.name, *(str(f) for f in override_files)],
            build=True,
            wait=True,
        )
        self.project = project
        self.env = dict(env)
        self.runner = runner
        self.wait_timeout = _WAIT_TIMEOUT_S

    @cached_property
    def compose_command_property(self) -> list[str]:
        base = super().compose_command_property
        return [base[0], base[1], "--project-name", self.project, *base[2:]]

    def _run_command(
        self, cmd: str | list[str], context: str | None = None
    ) -> CompletedProcess[bytes]:
        args = cmd.split() if isinstance(cmd, str) else list(cmd)
        if "up" in args and "--wait" in args:
            args[args.index("--wait") + 1 : args.index("--wait") + 1] = [
                "--wait-timeout",
                str(self.wait_timeout),
            ]
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
        wait_timeout: int = _WAIT_TIMEOUT_S,
        port_schemes: Mapping[int, str] | None = None,
        override_files: Sequence[Path] = (),
        served_by: Mapping[str, ServedBy] | None = None,
        topology: str = "",
    ) -> None:
        self.compose_file = compose_file.resolve()
        # Service -> the compose service whose published port serves it (a topology's
        # balancer in front of replicas); `topology` names where that came from, for errors.
        self.served_by: Mapping[str, ServedBy] = dict(served_by or {})
        self.topology = topology
        # Container port -> URL scheme of its published address (5432 -> postgresql); every
        # other port is reached over http. The app's knowledge, handed in, not assumed here.
        self.port_schemes: Mapping[int, str] = dict(port_schemes or {})
        self.project = project
        self.override_files: tuple[Path, ...] = tuple(override_files)
        self.env = dict(env or {})
        self.runner: CommandRunner = runner or SubprocessRunner()
        # Progress quotes exception texts and compose's output: redacted like the reports.
        shown = progress or (lambda _line: None)
        self.progress: ProgressCallback = lambda line: shown(redact(line))
        self._compose = _ProjectCompose(
            self.compose_file, project, self.env, self.runner, override_files
        )
        self._compose.wait_timeout = wait_timeout
        self._endpoints: dict[str, str] | None = None
        self._config: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        return f"compose:{self.project}"

    @property
    def files(self) -> tuple[Path, ...]:
        """The compose file and its override files, in the order compose reads them."""
        return (self.compose_file, *self.override_files)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Check Docker and the compose file, then build and start the stack (`up`)."""
        self.check_engine()
        self.validate()
        self.up()

    def up(self) -> None:
        """Build and start the stack; return once every service is healthy.

        Raises `StackStartError` naming each service that is not healthy, with its health
        check output and last log lines (testcontainers alone gives a bare
        CalledProcessError). The containers are left as they are, for the caller to look
        at or tear down.
        """
        self.progress(f"starting stack {self.project} from {self.compose_file}")
        started = time.monotonic()
        watcher = _StateWatcher(self, self.progress)
        watcher.start()
        try:
            self._compose.start()
        except CalledProcessError as exc:
            watcher.finish()
            raise StackStartError(
                f"stack {self.project} ({self.compose_file}) did not become healthy",
                self.diagnose(),
                _text(exc.stderr) + _text(exc.stdout),
            ) from None
        except TimeoutExpired as exc:
            watcher.finish()
            raise StackStartError(
                f"stack {self.project} ({self.compose_file}) did not become healthy within "
                f"{exc.timeout:.0f} s",
                self.diagnose(),
                _text(exc.stderr) + _text(exc.output),
            ) from None
        except BaseException:
            watcher.stop()  # e.g. Ctrl-C: no more polling while the run unwinds
            raise
        watcher.finish()
        self.progress(f"stack {self.project} healthy in {time.monotonic() - started:.1f} s")

    def stop(self, timeout: float = _UP_TIMEOUT_S) -> None:
        """`down` with its volumes; the command is killed after `timeout` seconds."""
        self._endpoints = None
        self._run(
            ["down", "--volumes", "--remove-orphans", "--timeout", "5"],
            check=False,
            timeout=timeout,
        )

    def remaining_containers(self, timeout: float = 60) -> list[str]:
        """IDs of containers still labelled with this project (any state)."""
        return project_containers(self.runner, self.project, timeout)

    def services(self) -> list[str]:
        """The services the compose file defines (`config --services`)."""
        result = self._run(["config", "--services"], check=False, timeout=60)
        if result.returncode != 0:
            raise StackStartError(f"compose file {self.compose_file} is invalid:\n{_said(result)}")
        return _text(result.stdout).split()

    def recreate(self, services: Sequence[str], env: Mapping[str, str]) -> None:
        """Recreate some services with a changed environment (e.g. fault switches)."""
        self.env.update(env)
        self._compose.env = dict(self.env)
        wait = ["--wait", "--wait-timeout", str(self._compose.wait_timeout)]
        self._run(["up", "--detach", *wait, "--no-deps", "--force-recreate", *services])
        self._endpoints = None

    def pause(self, *services: str) -> None:
        """Freeze services (`docker compose pause`): peers see hangs, not resets."""
        self._run(["pause", *services])

    def unpause(self, *services: str) -> None:
        self._run(["unpause", *services])

    def exec(self, service: str, *command: str) -> str:
        """Run a command in a service's container; its standard output."""
        try:
            stdout, _, _ = self._compose.exec_in_container(list(command), service)
        except CalledProcessError as exc:
            raise StackStartError(
                f"`docker compose exec {service} {' '.join(command)}` failed for "
                f"{self.project} (exit {exc.returncode})",
                compose_output=_text(exc.stderr),
            ) from None
        return stdout

    def check_engine(self) -> None:
        """Raise `DockerUnavailable`, saying what to do, unless Docker and Compose v2 work."""
        result = self.runner(["docker", "version", "--format", "{{.Server.Version}}"], timeout=30)
        if result.returncode != 0:
            said = _text(result.stderr).strip() or _text(result.stdout).strip() or "no answer"
            hint = (
                "Give your user access to the Docker socket (e.g. add it to the `docker` "
                "group and log in again)"
                if "permission denied" in said.lower()
                else "Start it (`make setup` does on Debian; or `sudo systemctl start docker`)"
            )
            raise DockerUnavailable(
                f"the Docker engine is not reachable: {said}\n{hint}, or use "
                "--apex-url SERVICE=URL to test an already-deployed stack without Docker."
            )
        compose = self.runner(["docker", "compose", "version", "--short"], timeout=30)
        if compose.returncode != 0:
            raise DockerUnavailable(
                "the Docker Compose v2 plugin is missing (`docker compose version` failed: "
                + (_text(compose.stderr).strip() or "no answer")
                + "). Install docker-compose-plugin (on Debian 12: `make setup`)."
            )

    def validate(self) -> None:
        """Raise `StackStartError` naming the file and compose's complaint if it is invalid."""
        if not self.compose_file.is_file():
            raise StackStartError(f"compose file not found: {self.compose_file}")
        result = self.runner(
            [*self._compose.compose_command_property, "config", "--quiet"],
            cwd=str(self.compose_file.parent),
            env=self.env,
            timeout=60,
        )
        if result.returncode != 0:
            said = (_text(result.stderr) or _text(result.stdout)).strip() or "no message"
            raise StackStartError(f"compose file {self.compose_file} is invalid:\n{said}")

    # -- what the suites read --------------------------------------------------------------

    def endpoints(self) -> dict[str, str]:
        """Base URL of each service; a service another one serves (`served_by`) is reached
        through that one's published port. Raises `StackStartError` when the serving
        service publishes no such port: the service's own replicas are no substitute."""
        if self._endpoints is None:
            entries = self._ps()
            found = _endpoints_of(entries, self.port_schemes)
            for service, served in self.served_by.items():
                found[service] = self._served_endpoint(entries, service, served)
            self._endpoints = found
        return dict(self._endpoints)

    def _served_endpoint(
        self, entries: Sequence[ComposeContainer], service: str, served: ServedBy
    ) -> str:
        name = served.compose_service
        published = [
            pub
            for entry in entries
            if entry.Service == name
            for pub in entry.Publishers
            if int(pub.PublishedPort or 0)
        ]
        matching = [
            pub
            for pub in published
            if served.port is None or int(pub.TargetPort or 0) == served.port
        ]
        if matching:
            return _url_of(min(matching, key=_publisher_rank), self.port_schemes)
        ports = sorted({int(pub.TargetPort or 0) for pub in published})
        seen = (
            f"{name} publishes {', '.join(map(str, ports))}"
            if ports
            else f"no running {name} container publishes a port"
        )
        raise StackStartError(
            (f"topology {self.topology}: " if self.topology else "")
            + f"{service} is served by compose service {name!r} on its published "
            + (f"port {served.port}" if served.port is not None else "port")
            + f", but {seen} in stack {self.project} (is {name} defined with that port "
            "published, in the compose file or the topology's override files?)"
        )

    def containers(self) -> list[ContainerInfo]:
        """The project's containers (any state).

        Raises `ContainerQueryError` when Docker cannot list or inspect them: an empty
        answer would read as "this target gives no container access" and skip the
        container checks.
        """
        try:
            listed = self._compose.get_containers(include_all=True)
        except CalledProcessError as exc:
            said = _text(exc.stderr).strip() or _text(exc.stdout).strip() or "no message"
            raise ContainerQueryError(
                f"`docker compose ps` failed for stack {self.project}: {said}"
            ) from None
        except ValueError as exc:  # not JSON
            raise ContainerQueryError(
                f"`docker compose ps` printed no JSON for stack {self.project}: {exc}"
            ) from None
        ids = [str(c.ID) for c in listed if c.ID]
        return [_container_info(_service_of(info), info) for info in self._inspect(ids)]

    def logs(self, service: str, tail: int = 200) -> str:
        # Not `DockerCompose.get_logs`: it has no --tail (a service's whole log, for a few
        # lines of it) and prefixes every line with the container name.
        result = self._run(
            ["logs", "--no-color", "--no-log-prefix", "--tail", str(tail), service], check=False
        )
        # Compose still writes terminal control sequences (erase-line) into piped logs.
        return _ANSI.sub("", _text(result.stdout) + _text(result.stderr))

    def environment(self, service: str) -> dict[str, str]:
        """The service's environment as compose resolves it (env_file entries included).

        Raises `ContainerQueryError` when compose cannot say: an empty answer is what an
        external target gives, and would skip the checks that need the environment.
        """
        if self._config is None:
            try:
                self._config = dict(self._compose.get_config())
            except CalledProcessError as exc:
                said = _text(exc.stderr).strip() or _text(exc.stdout).strip() or "no message"
                raise ContainerQueryError(
                    f"`docker compose config` failed for stack {self.project}: {said}"
                ) from None
            except (TypeError, ValueError) as exc:  # not JSON, or not an object
                raise ContainerQueryError(
                    f"`docker compose config` printed no JSON for stack {self.project}: {exc}"
                ) from None
        spec = self._config.get("services", {}).get(service, {})
        return {k: "" if v is None else str(v) for k, v in (spec.get("environment") or {}).items()}

    def image_ids(self) -> dict[str, str]:
        return {c.service: c.image_id for c in self.containers()}

    def diagnose(self) -> list[ServiceDiagnosis]:
        """Every service that is not running-and-healthy, with its health output and logs.

        The likely culprits (unhealthy, exited) come first; services compose created but
        never started, because something they depend on failed, come last.
        """
        diagnoses = []
        for entry in self._ps(all_states=True):
            state, health = entry.State or "", entry.Health or ""
            if state == "running" and health in ("", "healthy"):
                continue
            never_ran = state == "created"
            diagnoses.append(
                ServiceDiagnosis(
                    service=entry.Service or "?",
                    state=state,
                    health=health,
                    health_output="" if never_ran else self._health_output(entry.ID or ""),
                    log_tail="" if never_ran else self.logs(entry.Service or "", tail=40),
                    exit_code=int(entry.ExitCode or 0),
                )
            )
        return sorted(diagnoses, key=lambda d: (d.state == "created", d.service))

    # -- helpers ---------------------------------------------------------------------------

    def _ps(self, all_states: bool = False) -> list[ComposeContainer]:
        """The project's containers as testcontainers lists them; none when compose fails
        (callers that must tell "none" from "cannot say" use `containers`)."""
        try:
            return self._compose.get_containers(include_all=all_states)
        except (CalledProcessError, ValueError):
            return []

    def _inspect(self, ids: Sequence[str]) -> list[dict[str, Any]]:
        """`docker inspect` of the containers; those removed since they were listed are left out.

        One call for all of them; if it fails, one call each, because a single container
        that vanished between `ps` and `inspect` fails the whole call and must not take
        the others with it.
        """
        if not ids:
            return []
        result = self.runner(["docker", "inspect", *ids], timeout=60)
        if result.returncode == 0:
            return self._inspected(result)
        found: list[dict[str, Any]] = []
        for container_id in ids:
            one = self.runner(["docker", "inspect", container_id], timeout=60)
            if one.returncode == 0:
                found += self._inspected(one)
            elif "no such" not in _text(one.stderr).lower():  # "No such object: <id>"
                raise ContainerQueryError(
                    f"`docker inspect {container_id}` failed for stack {self.project}: {_said(one)}"
                )
        return found

    def _inspected(self, result: CompletedProcess[bytes]) -> list[dict[str, Any]]:
        try:
            return _objects(json.loads(result.stdout))
        except json.JSONDecodeError:
            raise ContainerQueryError(
                f"`docker inspect` printed no JSON for stack {self.project}: "
                f"{_text(result.stdout).strip()[:200] or 'no output'}"
            ) from None

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

    def _run(
        self, args: Sequence[str], check: bool = True, timeout: float = _UP_TIMEOUT_S
    ) -> CompletedProcess[bytes]:
        cmd = [*self._compose.compose_command_property, *args]
        result = self.runner(cmd, cwd=str(self.compose_file.parent), env=self.env, timeout=timeout)
        if check and result.returncode != 0:
            raise StackStartError(
                f"`docker compose {' '.join(args)}` failed for {self.project}",
                self.diagnose() if "up" in args else [],
                _text(result.stderr),
            )
        return result


def project_containers(runner: CommandRunner, project: str, timeout: float = 60) -> list[str]:
    """IDs of the containers (any state) labelled as belonging to a compose project."""
    result = runner(
        ["docker", "ps", "--all", "--quiet", "--filter", f"label={PROJECT_LABEL}={project}"],
        timeout=timeout,
    )
    return _text(result.stdout).split() if result.returncode == 0 else []


class _StateWatcher:
    """Reports each service's state as it changes while `up --wait` blocks.

    `up --wait` prints nothing until it is done (its output is captured), and a cold build
    takes minutes: without this a run looks hung. Every state change is reported, and a
    "still waiting" line when nothing changed for a few seconds.
    """

    def __init__(self, target: ComposeTarget, progress: ProgressCallback) -> None:
        self.target = target
        self.progress = progress
        self._seen: dict[str, str] = {}
        self._started = self._last_news = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="apex-compose-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def finish(self) -> None:
        """Stop, then report the changes since the last poll (e.g. the final "healthy")."""
        self.stop()
        if not self._thread.is_alive():
            self._poll()

    def _run(self) -> None:
        while not self._stop.wait(_POLL_INTERVAL_S):
            self._poll(stop_aware=True)
            now = time.monotonic()
            if now - self._last_news >= _STILL_WAITING_EVERY_S and not self._stop.is_set():
                self._last_news = now
                pending = sorted(f"{s} ({st})" for s, st in self._seen.items() if st != "healthy")
                doing = (
                    "waiting for " + ", ".join(pending)
                    if pending
                    else "building images and creating containers"
                )
                self._say(f"  still waiting ({now - self._started:.0f} s): {doing}")

    def _poll(self, stop_aware: bool = False) -> None:
        try:
            entries = self.target._ps(all_states=True)
        except Exception:  # progress is best effort: never let it break a bring-up
            return
        if stop_aware and self._stop.is_set():
            return  # `up` ended while we polled; `finish` reports the final states
        now = time.monotonic()
        for entry in entries:
            state = entry.Health or entry.State or "?"
            service = entry.Service or "?"
            if self._seen.get(service) != state:
                before = self._seen.get(service, "new")
                self._seen[service] = state
                self._last_news = now
                self._say(f"  {service}: {before} -> {state} ({now - self._started:.1f} s)")

    def _say(self, line: str) -> None:
        # A broken terminal must not stop the watcher, let alone the bring-up.
        with contextlib.suppress(Exception):
            self.progress(line)


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
        exit_code=int(state.get("ExitCode") or 0),
        number=_container_number(inspect),
    )


def _container_number(inspect: Mapping[str, Any]) -> int:
    labels = inspect.get("Config", {}).get("Labels") or {}
    number = str(labels.get("com.docker.compose.container-number", ""))
    return int(number) if number.isdigit() else 0


def _objects(data: Any) -> list[dict[str, Any]]:
    items = data if isinstance(data, list) else [data]
    return [item for item in items if isinstance(item, dict)]


def _publisher_rank(pub: PublishedPortModel) -> tuple[bool, int]:
    return (":" in str(pub.URL or ""), int(pub.TargetPort or 0))


def _endpoints_of(
    entries: Sequence[ComposeContainer], port_schemes: Mapping[int, str] | None = None
) -> dict[str, str]:
    """Base URL of each service with a published port, from testcontainers' containers.

    A service's lowest published container port wins, an IPv4 address over an IPv6 one
    (compose lists both for a wildcard bind), and a wildcard bind is reached on loopback.
    """
    found: dict[str, str] = {}
    for entry in entries:
        service = entry.Service
        if not service or service in found:
            continue
        published = [p for p in entry.Publishers if int(p.PublishedPort or 0)]
        published.sort(key=_publisher_rank)
        if not published:
            continue
        found[str(service)] = _url_of(published[0], port_schemes)
    return found


def _url_of(pub: PublishedPortModel, port_schemes: Mapping[int, str] | None) -> str:
    """The base URL of one published port; a wildcard bind is reached on loopback."""
    scheme = (port_schemes or {}).get(int(pub.TargetPort or 0), "http")
    host = str(pub.URL or "")
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{int(pub.PublishedPort or 0)}"


def _said(result: CompletedProcess[bytes]) -> str:
    """What a failed command said (its error output first)."""
    return _text(result.stderr).strip() or _text(result.stdout).strip() or "no message"


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data.decode("utf-8", "replace") if isinstance(data, bytes) else data
