"""PLACEHOLDER replaced by the topology branch's renderer at merge."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path


def render_contamination_matrix(
    labels: Sequence[str], counts: Mapping[tuple[int, int], int], path: Path, *, title: str = ""
) -> Path:
    path.write_bytes(b"")
    return path


def stream_timeline(frames: Sequence[tuple[float, str, str]], path: Path) -> Path:
    path.write_bytes(b"")
    return path
