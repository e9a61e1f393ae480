"""Keys under which the plugin keeps per-run objects on `config.stash`.

`settings_key` (the resolved `ApexSettings`) lives in `pytest_apex.settings`, next to the type.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from pytest_apex.criteria import Verdict

if TYPE_CHECKING:
    from pytest_apex.targets.base import TargetProvider

# The run's target (started lazily by whoever acquires it first).
target_session_key: pytest.StashKey[TargetProvider] = pytest.StashKey()

# Every criterion recorded in this process; the controller's also holds its workers'.
verdict_key: pytest.StashKey[Verdict] = pytest.StashKey()
