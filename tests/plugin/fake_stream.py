"""An in-process app with streamed agent runs, for the streaming isolation engine's tests.

It speaks a protocol like the reference stack's (run_accepted, five events, a terminal one;
errors answer a message_id) with millisecond steps, and can be given bugs of the kinds the
engine must catch without knowing them: a summary sent to the wrong user after the run, an
error that quotes another user's request, events broadcast to everyone, a list that carries
another user's truncated preview, probes served, an error naming another user's e-mail;
and faults that leave a check unproven: REST answering 500 (`server_errors`), a listing whose
connection fails before any answer (`list_raises`), runs accepted but never streamed
(`silent`).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pytest_apex.adapters.base import RunSignal

TERMINAL = {"agent_completed": "completed", "agent_error": "failed", "agent_cancelled": "cancelled"}


@dataclass
class FakeAnswer:
    method: str
    url: str
    status: int
    body: Any

    @property
    def text(self) -> str:
        return json.dumps(self.body)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def refused(self) -> bool:
        return self.status in (401, 403, 404)


@dataclass
class FakeRun:
    run_id: str
    owner: str
    thread_id: str
    text: str
    status: str = "running"
    task: asyncio.Task[None] | None = None


@dataclass
class FakeApp:
    bugs: frozenset[str] = frozenset()
    step_s: float = 0.002
    socket_cap: int = 3
    rate_limit: int = 100
    threads: dict[str, tuple[str, str]] = field(default_factory=dict)  # id -> (owner, title)
    runs: dict[str, FakeRun] = field(default_factory=dict)
    sockets: dict[str, list[FakeSocket]] = field(default_factory=dict)
    emails: dict[str, str] = field(default_factory=dict)
    last_connected: str = ""
    last_failure: str = ""
    live_sockets: int = 0
    live_contexts: int = 0
    ids: itertools.count[int] = field(default_factory=itertools.count)

    def deliver(self, user_id: str, event: dict[str, Any]) -> None:
        targets = (
            [s for group in self.sockets.values() for s in group]
            if "broadcast" in self.bugs
            else list(self.sockets.get(user_id, []))
        )
        for socket in targets:
            socket.push(event)

    async def execute(self, run: FakeRun) -> None:
        self.live_contexts += 1

        def event(kind: str, **extra: Any) -> dict[str, Any]:
            payload = {"user_id": run.owner, "user_request": run.text, **extra}
            return {
                "type": kind,
                "run_id": run.run_id,
                "thread_id": run.thread_id,
                "payload": payload,
            }

        if "silent" in self.bugs:
            self.live_contexts -= 1
            return
        try:
            for kind in ("agent_started", "agent_thinking", "tool_executing"):
                self.deliver(run.owner, event(kind))
                await asyncio.sleep(self.step_s)
            if run.text.startswith("/fail "):
                quoted = self.last_failure if "error_echo" in self.bugs else ""
                self.last_failure = run.text[6:46]
                run.status = "failed"
                self.deliver(run.owner, event("agent_error", error=f"tool failed {quoted}".strip()))
                return
            self.deliver(run.owner, event("tool_completed"))
            await asyncio.sleep(self.step_s)
            run.status = "completed"
            self.deliver(run.owner, event("agent_completed", result="done"))
            if "late_summary" in self.bugs:
                await asyncio.sleep(self.step_s * 5)
                wrong = next((u for u in self.sockets if u != run.owner), run.owner)
                self.deliver(
                    wrong,
                    {"type": "run_summary", "payload": {"by": run.owner, "summary": run.text[:40]}},
                )
        except asyncio.CancelledError:
            run.status = "cancelled"
            self.deliver(run.owner, event("agent_cancelled", reason="cancelled by the user"))
        finally:
            self.live_contexts -= 1

    def metrics(self) -> dict[str, float]:
        return {
            "live_sockets": float(self.live_sockets),
            "live_contexts": float(self.live_contexts),
        }


class FakeSocket:
    def __init__(self, app: FakeApp, user_id: str, on_frame: Callable[[str], None]) -> None:
        self.app = app
        self.user_id = user_id
        self.on_frame = on_frame
        self._closed = asyncio.Event()
        self._reason = ""
        self.sent = 0
        group = app.sockets.setdefault(user_id, [])
        group.append(self)
        app.live_sockets += 1
        app.last_connected = user_id
        if len(group) > app.socket_cap:
            asyncio.get_running_loop().call_soon(self._end, "closed 1008: too many connections")

    def push(self, event: dict[str, Any]) -> None:
        if not self._reason:
            asyncio.get_running_loop().call_soon(self._deliver, json.dumps(event))

    def _deliver(self, text: str) -> None:
        if not self._reason:
            self.on_frame(text)

    def _end(self, reason: str) -> None:
        if self._reason:
            return
        self._reason = reason
        self.app.sockets[self.user_id].remove(self)
        self.app.live_sockets -= 1
        self._closed.set()

    @property
    def closed_reason(self) -> str:
        return self._reason

    async def wait_closed(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._closed.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def _error(self, key: str, code: str, message: str) -> str:
        self.push(
            {"type": "error", "payload": {"code": code, "message": message}, "message_id": key}
        )
        return key

    def _limited(self, key: str) -> bool:
        self.sent += 1
        if self.sent > self.app.rate_limit:
            self._error(key, "rate_limited", "slow down")
            return True
        return False

    async def start_run(self, thread_id: str, user_request: str) -> str:
        key = str(uuid.uuid4())
        if self._limited(key):
            return key
        owner, _title = self.app.threads.get(thread_id, ("", ""))
        if owner != self.user_id and "serve_probes" not in self.bugs:
            message = "no such thread"
            if "identity_in_error" in self.bugs and owner:
                message = f"thread belongs to {self.app.emails[owner]}"
            return self._error(key, "thread_not_found", message)
        run = FakeRun(str(uuid.uuid4()), self.user_id, thread_id, user_request)
        self.app.runs[run.run_id] = run
        self.push({"type": "run_accepted", "run_id": run.run_id, "message_id": key})
        run.task = asyncio.create_task(self.app.execute(run))
        return key

    @property
    def bugs(self) -> frozenset[str]:
        return self.app.bugs

    async def cancel_run(self, run_id: str) -> str:
        key = str(uuid.uuid4())
        if self._limited(key):
            return key
        run = self.app.runs.get(run_id)
        if run is None or run.owner != self.user_id or run.task is None or run.task.done():
            return self._error(key, "run_not_found", "no such run")
        run.task.cancel()
        return key

    async def chatter(self, count: int) -> None:
        for _ in range(count):
            key = str(uuid.uuid4())
            if not self._limited(key):
                self.push({"type": "pong", "message_id": key})

    async def close(self, *, abrupt: bool = False) -> None:
        self._end("closed 1006: dropped" if abrupt else "closed 1000: bye")


class FakeStreamingSession:
    def __init__(self, app: FakeApp, index: int) -> None:
        self.app = app
        self.user_id = str(uuid.uuid4())
        self.username = self.email = f"user{index}@fake.test"
        app.emails[self.user_id] = self.email

    async def create_thread(self, title: str) -> dict[str, Any]:
        thread_id = str(uuid.uuid4())
        self.app.threads[thread_id] = (self.user_id, title)
        return {"id": thread_id, "user_id": self.user_id, "title": title}

    async def open_stream(self, on_frame: Callable[[str], None]) -> FakeSocket:
        return FakeSocket(self.app, self.user_id, on_frame)

    def run_signal(self, frame: Any) -> RunSignal | None:
        if not isinstance(frame, dict):
            return None
        key = frame.get("message_id") or ""
        if frame.get("type") == "run_accepted":
            return RunSignal(run_id=frame["run_id"], request_key=key, accepted=True)
        if frame.get("type") == "error":
            return RunSignal(request_key=key, refused=True) if key else None
        if not frame.get("run_id"):
            return None
        return RunSignal(run_id=frame["run_id"], terminal=TERMINAL.get(frame.get("type", ""), ""))

    def failing_request(self, text: str) -> str:
        return "/fail " + text

    async def run_status(self, run_id: str) -> FakeAnswer:
        url = f"http://fake/api/runs/{run_id}"
        if "server_errors" in self.app.bugs:
            return FakeAnswer("GET", url, 500, {"detail": "internal error"})
        run = self.app.runs.get(run_id)
        if run is None or (run.owner != self.user_id and "serve_probes" not in self.app.bugs):
            return FakeAnswer("GET", url, 404, {"detail": "not found"})
        return FakeAnswer(
            "GET", url, 200, {"id": run.run_id, "user_id": run.owner, "status": run.status}
        )

    async def list_thread_pages(self, page_size: int | None = None) -> list[FakeAnswer]:
        if "list_raises" in self.app.bugs:
            raise ConnectionResetError("the listing's connection was reset")
        if "server_errors" in self.app.bugs:
            return [FakeAnswer("GET", "http://fake/api/threads", 500, {"detail": "internal error"})]
        mine = [
            {"id": t, "title": title, "user_id": owner}
            for t, (owner, title) in self.app.threads.items()
            if owner == self.user_id
        ]
        if "list_leak" in self.app.bugs:
            other = next(
                (title for owner, title in self.app.threads.values() if owner != self.user_id), ""
            )
            for thread in mine:
                thread["meta"] = {"preview": other[:20].upper()}  # truncated, re-cased
        size = page_size or 50
        pages = [mine[i : i + size] for i in range(0, len(mine), size)] or [[]]
        return [
            FakeAnswer("GET", f"http://fake/api/threads?offset={n}", 200, p)
            for n, p in enumerate(pages)
        ]

    async def read_thread(self, thread_id: str) -> list[FakeAnswer]:
        url = f"http://fake/api/threads/{thread_id}"
        if "server_errors" in self.app.bugs:
            return [FakeAnswer("GET", url, 500, {"detail": "internal error"})]
        owner, title = self.app.threads.get(thread_id, ("", ""))
        if owner != self.user_id:
            return [FakeAnswer("GET", url, 404, {"detail": "not found"})]
        return [FakeAnswer("GET", url, 200, {"id": thread_id, "title": title, "user_id": owner})]

    async def close(self) -> None:
        pass


def fake_world(bugs: frozenset[str] = frozenset(), **app: Any) -> tuple[FakeApp, Any, Any]:
    """The app, a `make_user` and a gauge reader for `run_agent_isolation`."""
    world = FakeApp(bugs=bugs, **app)

    async def make_user(index: int) -> Any:
        return FakeStreamingSession(world, index)

    async def gauges() -> dict[str, float]:
        return world.metrics()

    return world, make_user, gauges
