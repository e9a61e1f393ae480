"""Root conftest: puts the repository root on sys.path so tests import `tests.*` helpers.

The plugin itself is loaded through its `pytest11` entry point, exactly as users get it.
"""

# pytester drives the plugin's own tests; pytest only accepts pytest_plugins at the root.
pytest_plugins = ["pytester"]
