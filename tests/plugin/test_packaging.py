"""What the wheel ships beside the code: the schemas (contracts for CI and for teams'
descriptions), the reference stack's description, and the suites themselves."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.wheel import build_wheel

SHIPPED = (
    "pytest_apex/report.schema.json",
    "pytest_apex/app/description.schema.json",
    "pytest_apex/reference/app.toml",
    "pytest_apex/suites/test_health.py",
    "pytest_apex/suites/test_isolation.py",
    "pytest_apex/suites/test_load.py",
)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.mark.parametrize("path", SHIPPED)
def test_the_wheel_ships(wheel: Path, path: str) -> None:
    with zipfile.ZipFile(wheel) as archive:
        assert archive.read(path) == (ROOT / path).read_bytes()
