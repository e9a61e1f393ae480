"""pytest-apex: prove a multi-service staging deployment before it reaches production.

The public surface: the settings a run resolved, the criteria and verdict it produced, and
the target protocol a custom deployment implements. The pytest plugin itself is
`pytest_apex.plugin` (loaded through the ``pytest11`` entry point).
"""

from pytest_apex.app import AppDescription, DescriptionError
from pytest_apex.criteria import Criterion, Stage, Verdict
from pytest_apex.recording import CriteriaRecorder
from pytest_apex.settings import ApexSettings, Thresholds
from pytest_apex.targets.base import ContainerInfo, Target

__all__ = [
    "ApexSettings",
    "AppDescription",
    "ContainerInfo",
    "CriteriaRecorder",
    "Criterion",
    "DescriptionError",
    "Stage",
    "Target",
    "Thresholds",
    "Verdict",
]
