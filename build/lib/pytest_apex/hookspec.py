"""Hooks pytest-apex calls, for conftest.py files and other plugins to implement.

Added with ``pluginmanager.add_hookspecs`` from the plugin's ``pytest_addhooks``. Example::

    # conftest.py
    def pytest_apex_criterion_recorded(criterion):
        if criterion.outcome != "pass":
            notify_oncall(criterion.message)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pytest_apex.criteria import Criterion, Verdict
    from pytest_apex.settings import ApexSettings
    from pytest_apex.targets.base import TargetProvider


@pytest.hookspec
def pytest_apex_criterion_recorded(criterion: Criterion, item: pytest.Item | None) -> None:
    """Called in the test's process each time a criterion is recorded, whatever its outcome.

    Runs before a failed ``apex_criteria.check`` raises, so implementations see every
    criterion (the Allure step of each one is such an implementation). ``item`` is the test
    that recorded it (None outside a test).
    Implementations must not raise: they would turn a measured result into an error.
    """


@pytest.hookspec
def pytest_apex_test_inconclusive(item: pytest.Item, reason: str) -> None:
    """Called in the test's process when a test ends without a judgement.

    That is: it raised `pytest_apex.recording.Inconclusive` (some criterion could not be
    judged), or it skipped after recording criteria. ``reason`` says why, as the verdict's
    ``inconclusive_tests`` will. Called while the test's report is being made, before other
    plugins log it (the Allure rendering marks the result ``unknown`` here).
    Implementations must not raise.
    """


@pytest.hookspec
def pytest_apex_verdict(verdict: Verdict, config: pytest.Config) -> None:
    """Called once per run, in the controller (or the only process), before the report is written.

    ``verdict`` already holds every worker's criteria and the session's outcome; an
    implementation may read it (to publish it elsewhere) or add criteria of its own.
    """


@pytest.hookspec(firstresult=True)
def pytest_apex_target_session(
    settings: ApexSettings, config: pytest.Config
) -> TargetProvider | None:
    """Create the run's target session; the first non-None result wins.

    Called in ``pytest_configure`` of every process. The default implementation builds
    ``pytest_apex.targets.lifecycle.TargetSession``: ``from_workerinput`` in an xdist worker,
    ``for_controller`` otherwise. Implement it to bring a different kind of target (or a
    fake one, in tests); the result implements the `TargetProvider` protocol.
    """
