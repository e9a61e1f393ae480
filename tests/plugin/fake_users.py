"""In-memory users for the isolation engine and suite: a world whose flags switch on faults.

`FakeWorld(users, idor=True)` behaves like the reference stack with that fault switched on;
``server_errors=True`` is a backend that answers every REST probe with a 500 (its listing
raises, as the reference adapter's ``raise_for_status`` does); ``flaky_access=True`` answers
every other read of a thread by id with a 500.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pytest_apex.adapters.base import AgentRun

EVENT_TYPES = ("agent_started", "agent_thinking", "tool_executing", "tool_completed")


class ServerError(Exception):
    """What a 500 on a listing looks like to a suite (httpx.HTTPStatusError, in real life)."""


def event(kind: str, run_id: str, user_id: str, text: str) -> dict[str, Any]:
    return {
        "type": kind,
        "run_id": run_id,
        "payload": {"user_id": user_id, "user_request": text},
    }


def run_of(run_id: str, user_id: str, text: str, *, complete: bool = True) -> AgentRun:
    kinds = [*EVENT_TYPES, "agent_completed"] if complete else list(EVENT_TYPES[:2])
    run = AgentRun(run_id=run_id, thread_id="t", user_request=text, seconds=1.5)
    run.events = [event(k, run_id, user_id, text) for k in kinds]
    return run


class FakeSession:
    """An in-memory user; the world's flags switch on the reference stack's faults."""

    def __init__(self, index: int, world: dict[str, Any]) -> None:
        self.user_id = f"uid-{index}"
        self.email = f"user{index}@apex.test"
        self.world = world
        self.inbox: list[dict[str, Any]] = []

    async def create_thread(self, title: str) -> dict[str, Any]:
        thread = {"id": f"th-{self.user_id}", "user_id": self.user_id, "title": title}
        self.world["threads"][thread["id"]] = thread
        return thread

    async def list_threads(self) -> list[dict[str, Any]]:
        if self.world.get("server_errors"):
            raise ServerError("Server error '500 Internal Server Error' for url '/api/threads'")
        threads = self.world["threads"].values()
        if self.world.get("unscoped"):
            return list(threads)
        return [t for t in threads if t["user_id"] == self.user_id]

    async def get_thread(self, thread_id: str) -> tuple[int, dict[str, Any]]:
        self.world["reads"] = self.world.get("reads", 0) + 1
        if self.world.get("server_errors") or (
            self.world.get("flaky_access") and self.world["reads"] % 2
        ):
            return 500, {"detail": "internal server error"}
        thread = self.world["threads"][thread_id]
        if thread["user_id"] != self.user_id and not self.world.get("idor"):
            return 404, {"detail": "not found"}
        return 200, thread

    async def run_agent(self, thread_id: str, user_request: str, timeout: float) -> AgentRun:
        self.world["running"] += 1
        self.world["peak"] = max(self.world["peak"], self.world["running"])
        await asyncio.sleep(0)  # let the others start: all runs overlap
        run = run_of(f"run-{user_request[-6:]}", self.user_id, user_request)
        if self.world.get("silent"):  # the socket never carries a single event
            run.events = []
        if self.world.get("broadcast"):  # every run's first event reaches every socket
            for other in self.world["sessions"]:
                if other is not self:
                    other.inbox.extend(run.events[:1])
        run.foreign, self.inbox = self.inbox, []
        self.world["running"] -= 1
        return run

    async def close(self) -> None:
        return None


class FakeWorld:
    """`users` in-memory users sharing one backend state (``state``)."""

    def __init__(self, users: int, **flags: Any) -> None:
        self.state: dict[str, Any] = {"threads": {}, "running": 0, "peak": 0, **flags}
        self.sessions = [FakeSession(i, self.state) for i in range(users)]
        self.state["sessions"] = self.sessions

    async def make_users(self, count: int) -> list[FakeSession]:
        return self.sessions[:count]

    async def run_agent(self, s: Any, thread_id: str, text: str, timeout: float) -> AgentRun:
        return await s.run_agent(thread_id, text, timeout)
