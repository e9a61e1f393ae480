"""workers=N: spawned processes whose histograms merge into one result."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from pytest_apex.load.engine import EngineSettings, LoadTargetUnreachable
from pytest_apex.load.http import HttpSessionFactory
from pytest_apex.load.stages import ClosedStage
from pytest_apex.load.workers import run_workers
from tests.plugin.fake_load import free_port, json_app, local_server


@pytest.fixture
def server_in_a_thread() -> Iterator[str]:
    """The JSON app in its own thread and loop (the workers are other processes)."""
    ready: list[str] = []
    stop = threading.Event()

    def serve() -> None:
        async def main() -> None:
            async with local_server(json_app()) as url:
                ready.append(url)
                while not stop.is_set():
                    await asyncio.sleep(0.02)

        asyncio.run(main())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    for _ in range(500):
        if ready:
            break
        thread.join(0.01)
    assert ready, "the local server did not start"
    yield ready[0]
    stop.set()
    thread.join(5)


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
