"""Root conftest: puts the repository root on sys.path so tests import `tests.*` helpers.

The plugin itself is loaded through its `pytest11` entry point, exactly as users get it.
pytester, which drives the plugin's own tests, is enabled in pyproject's addopts
(`-p pytester`): a `pytest_plugins` here would break child runs whose rootdir lies elsewhere
but which collect the shipped suites from this tree.
"""
