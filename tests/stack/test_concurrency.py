"""150 users, each running the agent at the same moment, on the clean stack."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from hdrh.histogram import HdrHistogram

from pytest_apex.adapters.base import AgentRun, UserSession

USERS = 150
RUN_TIMEOUT_S = 60.0


async def test_150_simultaneous_agent_runs_all_succeed_in_isolation(
    apex_users, apex_run_agent, pytestconfig
):
    sessions: list[UserSession] = await apex_users(USERS)
    threads = await asyncio.gather(*(s.create_thread("concurrency") for s in sessions))
    await asyncio.gather(*(s.connect() for s in sessions))  # sockets open before the start
    start = asyncio.Event()

    async def one(session: UserSession, thread_id: str) -> AgentRun:
        await start.wait()
        return await apex_run_agent(
            session, thread_id, f"request of {session.email}", RUN_TIMEOUT_S
        )

    tasks = [asyncio.create_task(one(s, t["id"])) for s, t in zip(sessions, threads, strict=True)]
    start.set()
    runs = await asyncio.gather(*tasks)

    failed = [r for r in runs if not r.completed]
    leaked = [r for r in runs if r.foreign]
    assert not failed, f"{len(failed)}/{USERS} runs did not complete: {failed[0].event_types}"
    assert not leaked, f"{len(leaked)} users saw other users' events"
    for session, run in zip(sessions, runs, strict=True):
        assert {e["payload"]["user_request"] for e in run.events} == {run.user_request}
        assert {e["payload"]["user_id"] for e in run.events} == {session.user_id}

    histogram = HdrHistogram(1, 120_000, 3)
    for run in runs:
        histogram.record_value(max(1, round(run.seconds * 1000)))
    summary = {
        "users": USERS,
        "completed": len(runs) - len(failed),
        "p50_ms": histogram.get_value_at_percentile(50),
        "p95_ms": histogram.get_value_at_percentile(95),
        "max_ms": histogram.get_max_value(),
    }
    out = Path(pytestconfig.rootpath, ".apex", "stack-concurrency.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2))
    print(f"\n150 simultaneous agent runs: {summary}")
