"""workers=N: spawned processes whose histograms merge into one result."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pytest_apex.load.engine import EngineSettings, LoadTargetUnreachable
from pytest_apex.load.http import HttpSessionFactory
from pytest_apex.load.stages import ClosedStage
from pytest_apex.load.workers import run_workers
from tests.plugin.fake_load import free_port, serving_in_a_thread


@pytest.fixture
def server_in_a_thread() -> Iterator[str]:
    """The JSON app in its own thread and loop (the workers are other processes)."""
    with serving_in_a_thread() as url:
        yield url


def test_two_workers_merge_into_one_result(server_in_a_thread: str) -> None:
    lines: list[tuple[str, bool]] = []
    result = run_workers(
        [ClosedStage(users=5, duration_s=0.6)],
        HttpSessionFactory(server_in_a_thread),
        2,
        settings=EngineSettings(window_s=0.25, grace_s=1, progress_interval_s=0.2),
        writer=lambda line, final: lines.append((line, final)),
    )
    (stage,) = result.stages
    assert stage.workers == 2
    assert stage.target == 5
    assert stage.reached == 5  # 3 + 2 users
    assert stage.description == "5 users"
    op = stage.ops["get"]
    assert op.ok == stage.completed > 20
    assert sum(w.count for w in op.windows.values()) == op.ok
    assert [final for _, final in lines].count(True) == 1
    assert lines[-1][0].startswith("load stage 1/1 (5 users): 5 users")


def test_workers_refuse_an_unreachable_target_before_starting() -> None:
    with pytest.raises(LoadTargetUnreachable, match="unreachable"):
        run_workers(
            [ClosedStage(10, 5)],
            HttpSessionFactory(f"http://127.0.0.1:{free_port()}"),
            2,
            settings=EngineSettings(probe_timeout_s=1),
        )
