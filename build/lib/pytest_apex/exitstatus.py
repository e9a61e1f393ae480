"""The exit status of a run that judged a deployment: a failure told apart from no proof.

pytest's own codes stay as they are (0 ok, 1 tests failed, 2 interrupted, 3 internal error,
4 usage error, 5 no tests collected). A run that selected suite tests or recorded criteria
exits by its verdict instead, as long as pytest itself got through it (0 or 1):

- ``pass``: 0;
- ``fail`` (a criterion failed, a test failed, a worker crashed): 1, pytest's "tests failed",
  even when every failing criterion was only `record`-ed;
- ``inconclusive``: `INCONCLUSIVE_EXIT` (6), or 0 with ``--apex-inconclusive pass``.

A plain test run (the plugin loaded, no suite selected, nothing recorded) keeps pytest's code.
"""

from __future__ import annotations

from typing import Final

import pytest

from pytest_apex.criteria import Verdict
from pytest_apex.settings.model import InconclusivePolicy

# The first code pytest leaves free (its own are 0-5): nothing failed, nothing was proven.
INCONCLUSIVE_EXIT: Final = 6


def exit_status(pytest_status: int, verdict: Verdict, inconclusive: InconclusivePolicy) -> int:
    """The run's exit status, given pytest's and the verdict (see the module docstring)."""
    if not verdict.applies:
        return pytest_status
    if pytest_status not in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED):
        return pytest_status  # interrupted, internal or usage error: pytest's word stands
    match verdict.status:
        case "fail":
            return int(pytest.ExitCode.TESTS_FAILED)
        case "inconclusive":
            return INCONCLUSIVE_EXIT if inconclusive == "fail" else int(pytest.ExitCode.OK)
        case _:
            return pytest_status
