"""Container security posture: non-root, resource limits, loopback-only ports."""

from __future__ import annotations

from pytest_apex.targets.base import ContainerInfo


def runs_as_root(container: ContainerInfo) -> bool:
    """Whether the container's process runs as root.

    Docker's user is ``user[:group]``, each a name or a number; only the user part decides
    (``0:1000`` and ``root:staff`` are root, ``1000:0`` is not). An unset user is the
    image's default, which is root unless the image said otherwise.
    """
    user = container.user.partition(":")[0].strip()
    return user in ("", "root") or (user.isdigit() and int(user) == 0)


def has_limits(container: ContainerInfo) -> bool:
    return container.memory_limit_bytes > 0 and container.nano_cpus > 0


def exposed_beyond_loopback(container: ContainerInfo) -> list[str]:
    """Published ports bound to anything but a loopback address."""
    return [
        f"{ip or '0.0.0.0'}:{host_port}->{port}"
        for ip, host_port, port in container.published
        if ip not in ("127.0.0.1", "::1")
    ]
