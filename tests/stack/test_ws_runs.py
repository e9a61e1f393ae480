"""Run control over the WebSocket on the clean stack: cancel_run, `/fail` requests, and the
answer to a cancel of a run that is not the caller's (two users over raw sockets)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.stack.ws_client import TERMINAL, Client, Socket, canary

AGENT_EVENTS = ["agent_started", "agent_thinking", "tool_executing", "tool_completed"]


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30.0) as client:
        yield client


async def _status_becomes(client: Client, run_id: str, wanted: str, timeout: float = 15) -> dict:
    """The run's row once it reaches `wanted` (it is closed just after the terminal event)."""
    deadline = time.monotonic() + timeout
    while True:
        answer = await client.run_status(run_id)
        assert answer.status_code == 200, answer.text
        row = answer.json()
        if row["status"] == wanted:
            return row
        assert time.monotonic() < deadline, f"run {run_id} still {row['status']}, not {wanted}"
        await asyncio.sleep(0.1)  # polling interval of a condition with a deadline


async def _users(http: httpx.AsyncClient, endpoints: dict[str, str], n: int):
    clients = await asyncio.gather(*(Client.login(http, endpoints) for _ in range(n)))
    threads = await asyncio.gather(*(c.create_thread() for c in clients))
    sockets = await asyncio.gather(*(c.connect() for c in clients))
    return clients, threads, sockets


async def _close(sockets: list[Socket]) -> None:
    await asyncio.gather(*(s.close() for s in sockets))


async def test_cancel_run_ends_in_agent_cancelled_and_leaves_others_alone(http, apex_endpoints):
    (alice, bob), (ta, tb), (sa, sb) = await _users(http, apex_endpoints, 2)
    try:
        text_a, text_b = canary("alice"), canary("bob")
        run_a, run_b = await asyncio.gather(sa.start(text_a, ta), sb.start(text_b, tb))
        await sa.wait_event(run_a, "tool_executing")
        await sa.send("cancel_run", {"run_id": run_a})
        cancelled = await sa.terminal(run_a)
        assert cancelled["type"] == "agent_cancelled", cancelled
        assert cancelled["payload"]["reason"] == "cancelled by the user"
        assert cancelled["payload"]["user_id"] == alice.user_id
        completed = await sb.terminal(run_b)
        assert [e["type"] for e in sb.events(run_b)] == [*AGENT_EVENTS, "agent_completed"]
        assert completed["payload"]["user_id"] == bob.user_id
        # One terminal event for the cancelled run, and nothing of it after: by the time
        # the row is closed the run has ended.
        row = await _status_becomes(alice, run_a, "cancelled")
        assert row["error"] == "cancelled by the user"
        assert row["cleanup_completed"] is True
        assert [e["type"] for e in sa.events(run_a) if e["type"] in TERMINAL] == ["agent_cancelled"]
        assert "tool_completed" not in [e["type"] for e in sa.events(run_a)]
        await _status_becomes(bob, run_b, "completed")
        # Neither user saw anything of the other.
        assert not [f for f in sa.frames if bob.user_id in str(f) or text_b in str(f)]
        assert not [f for f in sb.frames if alice.user_id in str(f) or text_a in str(f)]
    finally:
        await _close([sa, sb])


async def test_a_run_can_be_cancelled_right_after_its_start(http, apex_endpoints):
    (alice,), (ta,), (sa,) = await _users(http, apex_endpoints, 1)
    try:
        run = await sa.start(canary("early"), ta)
        await sa.send("cancel_run", {"run_id": run})
        assert (await sa.terminal(run))["type"] == "agent_cancelled"
        await _status_becomes(alice, run, "cancelled")
    finally:
        await sa.close()


async def test_cancel_of_a_run_not_the_callers_own_is_run_not_found(http, apex_endpoints):
    """Someone else's run, an unknown id and a finished run get the same answer, so a
    cancel reveals nothing; the other user's run goes on untouched."""
    (alice, _bob), (ta, _tb), (sa, sb) = await _users(http, apex_endpoints, 2)
    try:
        finished = await sb.start(canary("bob-done"))
        await sb.terminal(finished)
        run_a = await sa.start(canary("alice"), ta)
        await sa.wait_event(run_a, "agent_started")
        answers = {}
        for label, run_id in (
            ("someone else's", run_a),
            ("unknown", "00000000-0000-4000-8000-000000000000"),
            ("finished", finished),
        ):
            message_id = await sb.send("cancel_run", {"run_id": run_id})
            answers[label] = await sb.wait_for(
                lambda fs, m=message_id: next((f for f in fs if f.get("message_id") == m), None)
            )
        for label, answer in answers.items():
            assert answer["type"] == "error", (label, answer)
            assert answer["payload"] == answers["unknown"]["payload"], label
        assert answers["unknown"]["payload"]["code"] == "run_not_found"
        assert (await sa.terminal(run_a))["type"] == "agent_completed"
        assert [e["type"] for e in sa.events(run_a)] == [*AGENT_EVENTS, "agent_completed"]
        await _status_becomes(alice, run_a, "completed")
        missing = await sb.send("cancel_run", {})
        refused = await sb.wait_for(
            lambda fs: next((f for f in fs if f.get("message_id") == missing), None)
        )
        assert refused["payload"]["code"] == "invalid_payload"
    finally:
        await _close([sa, sb])


async def test_a_fail_request_ends_in_agent_error_with_generic_text(http, apex_endpoints):
    (alice,), (ta,), (sa,) = await _users(http, apex_endpoints, 1)
    try:
        request = "/fail " + canary("alice")
        run = await sa.start(request, ta)
        error = await sa.terminal(run)
        assert error["type"] == "agent_error", error
        assert [e["type"] for e in sa.events(run)] == [
            "agent_started",
            "agent_thinking",
            "tool_executing",
            "agent_error",
        ]
        assert error["payload"]["error"] == "the tool thread_history failed"
        row = await _status_becomes(alice, run, "failed")
        assert row["error"] == "the tool thread_history failed"
        # The user's next run is unaffected.
        assert (await sa.terminal(await sa.start(canary("next"), ta)))["type"] == "agent_completed"
    finally:
        await sa.close()


async def test_tool_result_quotes_the_users_own_thread_history(http, apex_endpoints):
    (_alice,), (ta,), (sa,) = await _users(http, apex_endpoints, 1)
    try:
        text = canary("history") + " and a long tail that the result truncates"
        events = await sa.run(text, ta)
        tool = next(e for e in events if e["type"] == "tool_completed")
        assert tool["payload"]["result"] == text[:40]
        assert tool["payload"]["history_messages"] == 1
        events = await sa.run(canary("second"), ta)
        tool = next(e for e in events if e["type"] == "tool_completed")
        assert tool["payload"]["history_messages"] == 3  # request, answer, request
    finally:
        await sa.close()
