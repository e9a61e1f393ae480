"""Targets: where the stack under test runs (compose via testcontainers, or external URLs)."""

from pytest_apex.targets.base import ContainerInfo, Target
from pytest_apex.targets.errors import DockerUnavailable, ServiceDiagnosis, StackStartError

__all__ = ["ContainerInfo", "DockerUnavailable", "ServiceDiagnosis", "StackStartError", "Target"]
