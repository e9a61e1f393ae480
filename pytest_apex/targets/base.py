"""What the suites need from a deployment, whoever runs it.

A `Target` is a running stack: the compose target (testcontainers) or an external one
(URLs of an already-deployed environment). Engines and suites only ever see
`endpoints()`; container-level checks ask `containers()`, and skip only on targets that
give no container access by design (external ones).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class ContainerInfo:
    """One service container as the health suite inspects it."""

    service: str
    container_id: str
    image_id: str
    state: str  # running, exited, ...
    health: str  # healthy, unhealthy, starting, or "" without a health check
    user: str  # the configured user ("" means root)
    memory_limit_bytes: int  # 0 means unlimited
    nano_cpus: int  # 0 means unlimited
    published: tuple[tuple[str, int, int], ...] = field(default=())  # (host_ip, host_port, port)
    exit_code: int = 0  # of an exited container (a one-shot job's result)
    number: int = 0  # which replica of its service (compose's container number; 0: unknown)


@dataclass(frozen=True)
class ServedBy:
    """Where a service of the app is reached when another compose service serves it.

    With replicas behind a balancer, the service's own containers publish no single
    address: its endpoint is the `compose_service`'s published `port` (the container port
    the service itself listens on; None: that service's lowest published port).
    """

    compose_service: str
    port: int | None = None


@runtime_checkable
class Target(Protocol):
    """A running deployment the suites test."""

    @property
    def name(self) -> str:
        """Human-readable identity, e.g. ``compose:apex-1a2b3c`` or ``external``."""
        ...

    def endpoints(self) -> dict[str, str]:
        """Base URL of each service, e.g. ``{"backend": "http://127.0.0.1:49153"}``."""
        ...

    def containers(self) -> list[ContainerInfo]:
        """The stack's containers; empty when the target gives no container access."""
        ...

    def logs(self, service: str, tail: int = 200) -> str:
        """The last `tail` log lines of a service ("" when not available)."""
        ...

    def environment(self, service: str) -> dict[str, str]:
        """The environment a service was configured with ({} when not known)."""
        ...

    def stop(self) -> None:
        """Tear the target down (a no-op for targets this run did not start)."""
        ...


@runtime_checkable
class TargetProvider(Protocol):
    """What ``pytest_apex_target_session`` returns: the run's target, from start to finish.

    One per process. The controller's (or the only process's) provider owns the target and
    tears it down in `finish`; an xdist worker's is built from what `workerinput` handed it.
    The default is `pytest_apex.targets.lifecycle.TargetSession`; a fake or a custom
    environment implements these four methods.
    """

    def acquire(self) -> Target:
        """The running target, started on first call; raises with the reason it cannot be."""
        ...

    def describe(self) -> Mapping[str, str]:
        """What the report says about the target (``target``, ``image.<service>``, ...)."""
        ...

    def workerinput(self) -> dict[str, str]:
        """What an xdist worker needs to build its own provider for the same target."""
        ...

    def finish(self) -> None:
        """Tear the target down (controller only); never raises."""
        ...
