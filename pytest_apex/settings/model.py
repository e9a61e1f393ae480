"""`ApexSettings`: everything the plugin was told, resolved and checked."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Final, Literal

import pytest

from pytest_apex.app import AppDescription, Topology
from pytest_apex.reference import reference_description
from pytest_apex.rollback.matrix import DecisionMatrix
from pytest_apex.settings.thresholds import DEFAULT_PROFILE, Thresholds

DEFAULT_REPORT: Final = ".apex/report.json"

InconclusivePolicy = Literal["fail", "pass"]
INCONCLUSIVE_POLICIES: Final[tuple[InconclusivePolicy, ...]] = ("fail", "pass")
DEFAULT_INCONCLUSIVE: Final[InconclusivePolicy] = "fail"
DEFAULT_LOAD_WORKERS: Final = 1
Executor = Literal["local", "ray"]
EXECUTORS: Final[tuple[Executor, ...]] = ("local", "ray")
DEFAULT_EXECUTOR: Final[Executor] = "local"


@dataclass(frozen=True)
class ApexSettings:
    """Everything the plugin was told, resolved and checked. Built once per process."""

    profile: str = DEFAULT_PROFILE
    stack: Path | None = None  # compose file; None when no stack is configured
    urls: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    keep: bool = False
    reuse: bool = False
    report: Path = Path(DEFAULT_REPORT)
    thresholds: Thresholds = field(default_factory=Thresholds.defaults)
    faults: tuple[str, ...] = ()
    # What an inconclusive verdict does to the exit status: "fail" keeps a required CI check
    # red when nothing was proven (`pytest_apex.exitstatus`).
    inconclusive: InconclusivePolicy = DEFAULT_INCONCLUSIVE
    # The seed of the suites' random choices (pairings, who cancels); None: a new one per
    # run, reported so that the run can be repeated with --apex-seed.
    seed: int | None = None
    rootdir: Path = Path()
    app: AppDescription = field(default_factory=reference_description)
    # The app's topology to deploy and judge (`--apex-topology`; "" for the base stack).
    topology: str = ""
    # Load generator processes (`--apex-load-workers`): one drives about one core.
    load_workers: int = DEFAULT_LOAD_WORKERS
    # Where the load workers run (`--apex-executor`): processes of this machine, or actors
    # of the Ray cluster at `ray_address` ("" starts a Ray instance of this machine).
    executor: Executor = DEFAULT_EXECUTOR
    ray_address: str = ""
    # The rollback decision matrix (`--apex-decision-matrix`): the shipped one, or a user's
    # file merged over it (`pytest_apex.rollback.matrix`), read and validated once here.
    decision_matrix: DecisionMatrix = field(default_factory=DecisionMatrix.default)

    @property
    def is_external(self) -> bool:
        """True when the suites test already-deployed URLs instead of a compose stack."""
        return bool(self.urls)

    @property
    def selected_topology(self) -> Topology | None:
        """The selected topology of the app description (None for the base stack)."""
        return self.app.topologies.get(self.topology) if self.topology else None

    @property
    def target_label(self) -> str:
        """A short description of the configured target, before anything is started."""
        if self.is_external:
            return "external"
        if self.stack is not None:
            return f"compose:{self.stack}"
        return "none"


settings_key = pytest.StashKey[ApexSettings]()
