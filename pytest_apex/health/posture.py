"""Container security posture: non-root, resource limits, loopback-only ports."""

from __future__ import annotations

from pytest_apex.targets.base import ContainerInfo

_ROOT_USERS = {"", "root", "0", "0:0", "root:root"}


def runs_as_root(container: ContainerInfo) -> bool:
    return container.user in _ROOT_USERS


def has_limits(container: ContainerInfo) -> bool:
    return container.memory_limit_bytes > 0 and container.nano_cpus > 0


def exposed_beyond_loopback(container: ContainerInfo) -> list[str]:
    """Published ports bound to anything but a loopback address."""
    return [
        f"{ip or '0.0.0.0'}:{host_port}->{port}"
        for ip, host_port, port in container.published
        if ip not in ("127.0.0.1", "::1")
    ]
