"""Errors a user sees when a target cannot be used; each names what to fix."""

from __future__ import annotations

from dataclasses import dataclass, field

from pytest_apex.targets.runner import DockerUnavailable

__all__ = ["DockerUnavailable", "ServiceDiagnosis", "StackStartError"]


@dataclass(frozen=True)
class ServiceDiagnosis:
    """Why one service is not healthy: its state, health-check output and last log lines."""

    service: str
    state: str
    health: str
    health_output: str
    log_tail: str

    def render(self) -> str:
        lines = [f"service {self.service!r} is {self.health or self.state}"]
        if self.health_output.strip():
            lines.append("  last health-check output:")
            lines += [f"    {line}" for line in self.health_output.strip().splitlines()]
        if self.log_tail.strip():
            lines.append("  last log lines:")
            lines += [f"    {line}" for line in self.log_tail.rstrip().splitlines()]
        return "\n".join(lines)


@dataclass
class StackStartError(RuntimeError):
    """The stack did not come up healthy (or compose rejected the file)."""

    summary: str
    diagnoses: list[ServiceDiagnosis] = field(default_factory=list)
    compose_output: str = ""

    def __post_init__(self) -> None:
        super().__init__(str(self))

    @property
    def unhealthy_services(self) -> list[str]:
        return [d.service for d in self.diagnoses]

    def __str__(self) -> str:
        parts = [self.summary]
        parts += [d.render() for d in self.diagnoses]
        if self.compose_output.strip() and not self.diagnoses:
            parts.append("docker compose said:\n" + self.compose_output.strip())
        return "\n".join(parts)
