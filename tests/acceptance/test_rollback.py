"""The rollback suite as this repository runs it: the very suite the plugin ships.

`pytest_apex/suites/test_rollback.py` is what `pytest -m rollback` collects in any project;
this module collects the same test (one per candidate of the description's rollout) under
tests/acceptance, and the plugin drops its own copy when a run collects both.
"""

from pytest_apex.suites.test_rollback import *  # noqa: F403
