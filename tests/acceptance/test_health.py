"""The health suite as this repository runs it: the very suite the plugin ships.

`pytest_apex/suites/test_health.py` is what `pytest -m health` collects in any project; this
module collects the same tests under tests/acceptance (nothing written twice), and the
plugin drops its own copy when a run collects both.
"""

from pytest_apex.suites.test_health import *  # noqa: F403
