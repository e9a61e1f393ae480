"""The engine against fake sessions, a virtual clock and real local servers."""

from __future__ import annotations

import asyncio
import time

import pytest

from pytest_apex.load.engine import (
    EngineSettings,
    LoadPlanRefused,
    LoadTargetUnreachable,
    Ops,
    check_open_files,
    run_plan,
    run_stage,
)
from pytest_apex.load.http import HttpRequest, HttpSessionFactory, WebSocketSessionFactory
from pytest_apex.load.stages import ClosedStage, OpenStage
from tests.plugin.fake_load import (
    ScriptedFactory,
    VirtualClock,
    free_port,
    json_app,
    local_server,
    ok,
    ws_app,
)

FAST = EngineSettings(window_s=1.0, grace_s=1.0, progress_interval_s=0.1, probe_timeout_s=1.0)
IDLE_CPU = lambda: 5.0  # noqa: E731  (a generator that is not saturated)


async def test_open_model_latency_from_the_intended_start_shows_a_stall_service_time_hides():
    # The process stalls for 300 ms once (a stop-the-world pause of an in-process app): the
    # sessions due during the stall start late. Timed from their actual start they look fast;
    # timed from when they were due, the stall shows.
    stall = {"at": time.monotonic() + 0.4, "s": 0.3}
    async with local_server(json_app(stall)) as url:
        factory = HttpSessionFactory(url)
        result = await run_plan(
            [OpenStage(rate=100, duration_s=1.2, max_concurrency=500)],
            factory,
            settings=FAST,
            cpu_percent=IDLE_CPU,
        )
    stage = result.stages[0]
    op = stage.ops["get"]
    assert stall["done"]
    assert op.service is not None
    latency_p90 = op.latency.get_value_at_percentile(90) / 1e6
    # Mean latency minus mean service time is exactly the mean lateness of the starts. About
    # a quarter of the sessions were due during the stall and started up to 300 ms late
    # (about 40 ms on average over all); timed from their actual start, that is invisible.
    lateness = (op.latency.get_mean_value() - op.service.get_mean_value()) / 1e6
    assert lateness > 0.025, lateness
    assert latency_p90 > 0.1, latency_p90
    assert op.latency.get_max_value() / 1e6 > 0.25
    assert stage.dropped == 0
    assert stage.reached == stage.target == 120


async def test_starts_that_cannot_be_made_are_counted_as_dropped():
    async def slow(ops: Ops, user: int) -> None:
        await ops.timed("op", ok(0.1))

    factory = ScriptedFactory(slow)
    stage = await run_stage(
        OpenStage(rate=100, duration_s=0.5, max_concurrency=2),
        factory,
        settings=FAST,
        cpu_percent=IDLE_CPU,
    )
    assert stage.reached == stage.target == 50
    assert stage.sessions + stage.dropped == 50
    assert stage.dropped >= 30
    assert stage.peak_users == 2


async def test_a_stage_stops_at_its_duration():
    async def loop(ops: Ops, user: int) -> None:
        await ops.timed("op", ok(0.001))

    began = time.monotonic()
    stage = await run_stage(
        ClosedStage(users=5, duration_s=0.3),
        ScriptedFactory(loop),
        settings=FAST,
        cpu_percent=IDLE_CPU,
    )
    took = time.monotonic() - began
    assert stage.stopped_by == "duration"
    assert 0.3 <= took < 0.8
    assert stage.completed > 10
    assert stage.reached_target


async def test_a_stage_stops_at_its_request_cap_exactly():
    async def loop(ops: Ops, user: int) -> None:
        await ops.timed("a", ok())
        await ops.timed("b", ok())

    began = time.monotonic()
    stage = await run_stage(
        ClosedStage(users=10, duration_s=5, max_requests=137),
        ScriptedFactory(loop),
        settings=FAST,
        cpu_percent=IDLE_CPU,
    )
    assert time.monotonic() - began < 2
    assert stage.stopped_by == "max_requests"
    assert stage.requests == stage.completed == 137


async def test_a_session_that_swallows_exceptions_still_stops():
    async def stubborn(ops: Ops, user: int) -> None:
        while True:
            try:
                await ops.timed("op", ok())
            except Exception:
                continue

    stage = await run_stage(
        ClosedStage(users=2, duration_s=0.2, max_requests=50),
        ScriptedFactory(stubborn),
        settings=FAST,
        cpu_percent=IDLE_CPU,
    )
    assert stage.requests == 50


async def test_think_time_on_a_virtual_clock():
    clock = VirtualClock()
    driver = asyncio.get_running_loop().create_task(clock.drive())

    async def user(ops: Ops, index: int) -> None:
        await ops.timed("op", ok())
        await ops.think(1.0)

    began = time.monotonic()
    try:
        stage = await run_stage(
            ClosedStage(users=3, duration_s=10.0),
            ScriptedFactory(user),
            settings=FAST,
            clock=clock,
            cpu_percent=IDLE_CPU,
        )
    finally:
        driver.cancel()
    assert time.monotonic() - began < 3  # ten virtual seconds, not real ones
    assert stage.completed == 30  # 3 users x one op a second for 10 s
    assert stage.window_indexes() == list(range(10))
    assert stage.elapsed_s == pytest.approx(10.0, abs=0.05)


async def test_an_unreachable_target_fails_fast_before_any_stage():
    factory = HttpSessionFactory(f"http://127.0.0.1:{free_port()}")
    began = time.monotonic()
    with pytest.raises(LoadTargetUnreachable, match=r"127\.0\.0\.1.*unreachable"):
        await run_plan([ClosedStage(150, 20)] * 5, factory, settings=FAST)
    assert time.monotonic() - began < 2


async def test_the_probe_itself_is_bounded():
    async def hangs() -> None:
        await asyncio.sleep(30)

    factory = ScriptedFactory(lambda ops, user: ops.timed("x", ok()), probe=hangs)
    began = time.monotonic()
    with pytest.raises(LoadTargetUnreachable, match="no answer within"):
        await run_plan([ClosedStage(1, 1)], factory, settings=EngineSettings(probe_timeout_s=0.2))
    assert time.monotonic() - began < 2
    assert factory.sessions == 0
    assert factory.closed == 1


def test_a_plan_beyond_the_open_files_limit_is_refused_naming_it():
    with pytest.raises(LoadPlanRefused, match=r"RLIMIT_NOFILE\) is 1024.*ulimit -n 2064"):
        check_open_files([ClosedStage(2000, 1)], getrlimit=lambda _: (1024, 4096))
    check_open_files([ClosedStage(2000, 1)], workers=4, getrlimit=lambda _: (1024, 4096))


async def test_run_plan_refuses_before_opening_anything():
    factory = ScriptedFactory(lambda ops, user: ops.timed("x", ok()))
    with pytest.raises(LoadPlanRefused):
        await run_plan(
            [ClosedStage(10, 1), ClosedStage(5000, 1)], factory, getrlimit=lambda _: (1024, 1024)
        )
    assert factory.opened == 0


async def test_http_errors_count_by_kind():
    async with local_server(json_app(status=503)) as url:
        result = await run_plan(
            [ClosedStage(users=2, duration_s=0.3)],
            HttpSessionFactory(url, requests=(HttpRequest("home"),)),
            settings=FAST,
            cpu_percent=IDLE_CPU,
        )
    stage = result.stages[0]
    assert stage.ok == 0
    assert set(stage.errors) == {"5xx"}
    assert stage.error_rate == 1.0


async def test_a_refused_connection_mid_run_is_its_own_kind():
    async def refused(ops: Ops, user: int) -> None:
        async def connect() -> None:
            await asyncio.open_connection("127.0.0.1", free_port())

        await ops.timed("connect", connect())

    stage = await run_stage(
        ClosedStage(1, 0.2, max_requests=5),
        ScriptedFactory(refused),
        settings=FAST,
        cpu_percent=IDLE_CPU,
    )
    assert stage.errors == {"connection_refused": 5}


async def test_saturated_generator_is_detected_from_its_loop_lag():
    async def hog(ops: Ops, user: int) -> None:
        async def blocking() -> None:
            time.sleep(0.08)  # the generator itself is the bottleneck

        await ops.timed("op", blocking())

    stage = await run_stage(
        ClosedStage(1, 0.6), ScriptedFactory(hog), settings=FAST, cpu_percent=IDLE_CPU
    )
    assert stage.health.lag_p99_s > 0.05
    assert stage.health.saturated
    assert "measured itself" in stage.health.saturation


async def test_progress_writes_one_live_line_per_stage():
    lines: list[tuple[str, bool]] = []

    async def loop(ops: Ops, user: int) -> None:
        await ops.timed("op", ok(0.001))

    await run_plan(
        [ClosedStage(3, 0.35), ClosedStage(4, 0.25)],
        ScriptedFactory(loop),
        settings=FAST,
        writer=lambda line, final: lines.append((line, final)),
        cpu_percent=IDLE_CPU,
    )
    finals = [line for line, final in lines if final]
    assert len(finals) == 2
    assert finals[0].startswith("load stage 1/2 (3 users): 3 users, ")
    assert finals[1].startswith("load stage 2/2 (4 users): 4 users, ")
    assert "req/s, p95 " in finals[1]
    assert "errors" in finals[1]
    assert any(not final and "stage 1/2" in line for line, final in lines)


async def test_websocket_sessions_time_message_round_trips():
    async with local_server(ws_app()) as url:
        factory = WebSocketSessionFactory(url.replace("http", "ws") + "/ws", interval_s=0.05)
        result = await run_plan(
            [ClosedStage(users=5, duration_s=0.5, ramp_s=0.1)],
            factory,
            settings=FAST,
            cpu_percent=IDLE_CPU,
        )
    stage = result.stages[0]
    assert stage.ops["ws_connect"].ok == 5
    assert stage.ops["ws_message"].ok >= 20
    assert not stage.errors


async def test_a_buggy_session_is_counted_and_bounded_by_the_cap():
    async def buggy(ops: Ops, user: int) -> None:
        raise KeyError("scenario bug")

    stage = await run_stage(
        ClosedStage(2, 5, max_requests=25),
        ScriptedFactory(buggy),
        settings=FAST,
        cpu_percent=IDLE_CPU,
    )
    assert stage.stopped_by == "max_requests"
    assert stage.errors == {"other": 25}
    assert "(session)" in stage.ops
