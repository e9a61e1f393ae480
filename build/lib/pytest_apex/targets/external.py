"""The external target: an already-deployed stack reached by URL, with no Docker at all."""

from __future__ import annotations

from collections.abc import Mapping

from pytest_apex.targets.base import ContainerInfo


class ExternalTarget:
    """Service URLs given with --apex-url; container-level checks skip on this target."""

    def __init__(self, urls: Mapping[str, str]) -> None:
        self._urls = {service: url.rstrip("/") for service, url in urls.items()}

    @property
    def name(self) -> str:
        return "external"

    def endpoints(self) -> dict[str, str]:
        return dict(self._urls)

    def containers(self) -> list[ContainerInfo]:
        return []

    def logs(self, service: str, tail: int = 200) -> str:
        return ""

    def environment(self, service: str) -> dict[str, str]:
        return {}

    def stop(self) -> None:
        """Nothing to do: this run did not start the deployment."""
