"""The isolation suite as this repository runs it: the very suite the plugin ships.

`pytest_apex/suites/test_isolation.py` is what `pytest -m isolation` collects in any
project; this module collects the same tests here (nothing written twice), and the plugin
drops its own copy when a run collects both.
"""

from pytest_apex.suites.test_isolation import *  # noqa: F403
