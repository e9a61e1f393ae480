"""The suites ship in the plugin: ``pytest -m health`` finds them in any project.

A project that installs pytest-apex has none of the suites' test files, so when the ``-m``
expression names a suite the plugin adds that suite's module to what pytest collects (by file
path, so the project's own ``python_files`` pattern does not matter). A project that also
collects the same test functions itself (this repository re-exports them under
``tests/acceptance``) gets each test once: the project's copy wins.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Final, cast

import pytest

SUITES_DIR: Final = Path(__file__).resolve().parent

_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# A suite whose tests live in another suite's module (the soak shares the load's engine).
_MODULE_OF: Final = {"soak": "load"}


def suite_files(markexpr: str, suites: Iterable[str]) -> list[Path]:
    """The shipped suite modules an ``-m`` expression may select, in suite order.

    Any suite the expression names is added, even one it negates: pytest's own marker
    filter then deselects what the expression excludes, which costs only an import.
    """
    named = set(_NAME.findall(markexpr or ""))
    modules = [_MODULE_OF.get(suite, suite) for suite in suites if suite in named]
    return [
        path
        for module in dict.fromkeys(modules)
        if (path := SUITES_DIR / f"test_{module}.py").is_file()
    ]


def add_to_collection(config: pytest.Config, suites: Iterable[str]) -> list[Path]:
    """Append the selected suites' modules to the run's collection arguments."""
    given = {Path(arg.split("::")[0]).resolve() for arg in config.args}
    added = [p for p in suite_files(config.option.markexpr, suites) if p not in given]
    config.args.extend(str(p) for p in added)
    return added


def _shipped(item: pytest.Item) -> bool:
    return SUITES_DIR in item.path.parents


def duplicates(items: Sequence[pytest.Item]) -> list[pytest.Item]:
    """Shipped suite items whose test function the project also collected itself."""
    own = {
        (
            getattr(item, "obj", None),
            getattr(item, "callspec", None) and cast(pytest.Function, item).callspec.id,
        )
        for item in items
        if not _shipped(item)
    }
    return [
        item
        for item in items
        if _shipped(item)
        and (
            getattr(item, "obj", None),
            getattr(item, "callspec", None) and cast(pytest.Function, item).callspec.id,
        )
        in own
    ]
