"""The marks every Notes test carries: integration, skipped without Docker (unless CI=true,
where a missing engine must fail), and one xdist group so a run shares one stack."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

BASE_IMAGE = "debian:bookworm-slim"


def _docker_missing() -> str:
    """Why the Notes stack cannot be built here ("" when it can)."""
    if shutil.which("docker") is None:
        return "no docker CLI"
    try:
        engine = subprocess.run(["docker", "version"], capture_output=True, timeout=30)
        base = subprocess.run(["docker", "image", "inspect", BASE_IMAGE], capture_output=True)
    except subprocess.TimeoutExpired:
        return "the Docker engine does not answer"
    if engine.returncode != 0:
        return "no Docker engine running"
    if base.returncode != 0:
        return f"base image {BASE_IMAGE} missing (make setup)"
    return ""


_MISSING = _docker_missing()

NOTES_STACK = [
    pytest.mark.integration,
    pytest.mark.skipif(
        bool(_MISSING) and not os.environ.get("CI"),
        reason=f"the Notes stack needs Docker: {_MISSING}",
    ),
    pytest.mark.xdist_group("notes-stack"),
]
