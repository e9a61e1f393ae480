"""The load suite as this repository runs it: the very suite the plugin ships.

`pytest_apex/suites/test_load.py` is what `pytest -m load` collects in any project; this
module collects the same test under tests/acceptance (nothing written twice), and the
plugin drops its own copy when a run collects both.
"""

from pytest_apex.suites.test_load import *  # noqa: F403
