"""Errors a user sees when a target cannot be used; each names what to fix."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from pytest_apex.targets.runner import CommandTimedOut, DockerUnavailable

__all__ = [
    "CommandTimedOut",
    "ContainerQueryError",
    "DockerUnavailable",
    "ServiceDiagnosis",
    "StackStartError",
]

# Lines of compose's own output shown in a start error: its last lines carry the reason
# ("container x is unhealthy", a build error); the rest is progress noise. More of it when
# no service diagnosis explains the failure (a build error, a port already taken).
COMPOSE_OUTPUT_TAIL = 8
COMPOSE_OUTPUT_TAIL_ALONE = 60
# Compose's per-object progress lines ("Container x  Started"), which say nothing of why.
_COMPOSE_PROGRESS = re.compile(
    r"^\s*(?:Network|Container|Volume|Image)\s+\S+\s+(?:Creating|Created|Starting|Started"
    r"|Waiting|Healthy|Running|Recreate|Recreated|Stopping|Stopped|Removing|Removed|Pulling"
    r"|Pulled|Built)\s*$"
)
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@dataclass(frozen=True)
class ServiceDiagnosis:
    """Why one service is not healthy: its state, health-check output and last log lines."""

    service: str
    state: str
    health: str
    health_output: str
    log_tail: str
    exit_code: int = 0

    @property
    def condition(self) -> str:
        """What is wrong, in words: "is unhealthy", "exited with code 1", ..."""
        if self.state == "created":
            return "was created but never started (a service it depends on failed)"
        if self.state in ("exited", "dead"):
            return f"{self.state} with code {self.exit_code}"
        if self.health == "starting":
            return "is still starting (its health check has not passed yet)"
        return f"is {self.health or self.state or 'in an unknown state'}"

    def render(self) -> str:
        lines = [f"service {self.service!r} {self.condition}"]
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
        said = [
            _ANSI.sub("", line).strip()
            for line in self.compose_output.splitlines()
            if line.strip() and not _COMPOSE_PROGRESS.match(_ANSI.sub("", line))
        ]
        if said:
            shown = said[-(COMPOSE_OUTPUT_TAIL if self.diagnoses else COMPOSE_OUTPUT_TAIL_ALONE) :]
            parts.append("docker compose said:\n" + "\n".join(f"  {line}" for line in shown))
        return "\n".join(parts)


class ContainerQueryError(RuntimeError):
    """Docker could not say what the containers of a running stack are.

    Raised instead of answering "no containers": that answer is how a target without
    container access (an external one) is told apart, and would silently skip the
    container checks (non-root user, limits, published ports) of a stack that has them.
    """
