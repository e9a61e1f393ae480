"""The contamination matrix and stream timeline: PNG files of bounded size, fast at 2,000 users.

What a chart shows is checked by eye (the README's figures); here: a PNG is written where
asked, its pixel size stays within bounds whatever the number of users, large runs are drawn
in well under a second, and malformed input is refused naming the problem.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pytest_apex.reporting.contamination import render_contamination_matrix, stream_timeline

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _png_size(path: Path) -> tuple[int, int]:
    """Width and height from the PNG's IHDR chunk (the first one, right after the magic)."""
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def _users(count: int) -> list[str]:
    return [f"user{i}-3f9a2c@apex.test" for i in range(count)]


def _assert_chart(path: Path, written: Path) -> None:
    assert written == path
    width, height = _png_size(path)
    assert 600 <= width <= 1600, width
    assert 200 <= height <= 1200, height
    assert 5_000 < path.stat().st_size < 2_000_000


@pytest.mark.parametrize(
    ("users", "counts"),
    [
        pytest.param(150, {}, id="clean-150"),
        pytest.param(150, {(3, 7): 2, (7, 3): 1, (10, 11): 40}, id="breached-150"),
        pytest.param(2000, {}, id="clean-2000"),
        pytest.param(2000, {(1, 1999): 3, (1500, 2): 7}, id="few-breaches-2000"),
        pytest.param(
            2000, {(i, (i * 7 + 1) % 2000): 1 + i % 4 for i in range(0, 2000, 3)}, id="many-2000"
        ),
        pytest.param(4, {(0, 1): 1}, id="tiny"),
    ],
)
def test_the_matrix_is_a_png_of_bounded_size(
    tmp_path: Path, users: int, counts: dict[tuple[int, int], int]
) -> None:
    path = tmp_path / "charts" / "matrix.png"  # the directory is created
    _assert_chart(path, render_contamination_matrix(_users(users), counts, path, title="run 1"))


def _best_of_three(draw: Callable[[], object]) -> float:
    """The fastest of three draws: the renderer's time, not the busiest moment of the host
    (other stacks share its two cores)."""
    draw()  # matplotlib's first import and font cache are not the renderer's time
    times = []
    for _ in range(3):
        started = time.perf_counter()
        draw()
        times.append(time.perf_counter() - started)
    return min(times)


def test_the_matrix_at_2000_users_renders_in_under_a_second(tmp_path: Path) -> None:
    labels = _users(2000)
    counts = {(i, (i * 13 + 5) % 2000): 1 + i % 3 for i in range(0, 2000, 2)}
    path = tmp_path / "matrix.png"
    assert _best_of_three(lambda: render_contamination_matrix(labels, counts, path)) < 1.0


def test_own_data_on_the_diagonal_is_no_breach_and_bad_indices_are_refused(
    tmp_path: Path,
) -> None:
    path = render_contamination_matrix(_users(3), {(1, 1): 5}, tmp_path / "own.png")
    assert _png_size(path)
    with pytest.raises(ValueError, match=r"counts name user \(0, 3\), but there are 3 labels"):
        render_contamination_matrix(_users(3), {(0, 3): 1}, tmp_path / "bad.png")


def test_the_timeline_of_a_breached_stream_is_a_png(tmp_path: Path) -> None:
    frames = [
        (1000.0 + i * 0.05, ("agent_thinking", "tool_completed")[i % 2], "own") for i in range(80)
    ]
    frames += [(1001.2, "tool_completed", "foreign"), (1004.5, "run_summary", "late")]
    path = tmp_path / "timeline.png"
    _assert_chart(path, stream_timeline(frames, path, title="user17 socket 2"))


def test_the_timeline_of_no_frames_still_renders(tmp_path: Path) -> None:
    _assert_chart(tmp_path / "empty.png", stream_timeline([], tmp_path / "empty.png"))


def test_the_timeline_refuses_an_unknown_marker(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown frame marker\(s\) \['alien'\]; accepted: own"):
        stream_timeline([(0.0, "x", "alien")], tmp_path / "t.png")


def test_many_frames_render_quickly(tmp_path: Path) -> None:
    frames = [
        (i * 0.001, f"type{i % 12}", ("own", "foreign", "late")[i % 3]) for i in range(20_000)
    ]
    stream_timeline(frames[:10], tmp_path / "warm.png")
    started = time.perf_counter()
    _assert_chart(tmp_path / "t.png", stream_timeline(frames, tmp_path / "t.png"))
    assert time.perf_counter() - started < 1.0
