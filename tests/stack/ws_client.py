"""A raw WebSocket client for the stack's own tests: every frame a socket receives is kept,
from connect to close, and tests wait on conditions over them with deadlines.

Deliberately independent of the plugin's adapters: these tests are the stack's own
witnesses (what really went over the wire), not a use of the suites' engine."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from contextlib import suppress
from typing import Any

import httpx
import websockets

from pytest_apex.adapters.apex import jwt_subprotocol, ws_url

Frame = dict[str, Any]
TERMINAL = frozenset({"agent_completed", "agent_error", "agent_cancelled"})


class Client:
    """One user: a login, and any number of sockets opened with `connect()`."""

    def __init__(self, http: httpx.AsyncClient, endpoints: dict[str, str], email: str) -> None:
        self.http = http
        self.endpoints = endpoints
        self.email = email
        self.user_id = ""
        self.token = ""

    @classmethod
    async def login(
        cls, http: httpx.AsyncClient, endpoints: dict[str, str], prefix: str = "ws"
    ) -> Client:
        client = cls(http, endpoints, f"{prefix}-{uuid.uuid4().hex[:12]}@apex.test")
        answer = await http.post(
            f"{endpoints['auth']}/auth/dev/login", json={"email": client.email}
        )
        answer.raise_for_status()
        body = answer.json()
        client.user_id, client.token = body["user"]["id"], body["access_token"]
        return client

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def create_thread(self, title: str = "t") -> str:
        answer = await self.http.post(
            f"{self.endpoints['backend']}/api/threads", json={"title": title}, headers=self.auth
        )
        answer.raise_for_status()
        return str(answer.json()["id"])

    async def run_status(self, run_id: str) -> httpx.Response:
        return await self.http.get(
            f"{self.endpoints['backend']}/api/runs/{run_id}", headers=self.auth
        )

    async def connect(self) -> Socket:
        ws = await websockets.connect(
            ws_url(self.endpoints["backend"]),
            subprotocols=[websockets.Subprotocol(jwt_subprotocol(self.token))],
            open_timeout=10,
            max_size=2**20,
        )
        return Socket(self, ws)


class Socket:
    def __init__(self, client: Client, ws: websockets.ClientConnection) -> None:
        self.client = client
        self.ws = ws
        self.frames: list[Frame] = []
        self._changed = asyncio.Condition()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        with suppress(websockets.ConnectionClosed):
            async for raw in self.ws:
                frame = json.loads(raw)
                async with self._changed:
                    self.frames.append(frame)
                    self._changed.notify_all()

    async def send(self, kind: str, payload: dict[str, Any]) -> str:
        message_id = uuid.uuid4().hex
        await self.ws.send(json.dumps({"type": kind, "payload": payload, "message_id": message_id}))
        return message_id

    async def wait_for(self, predicate: Callable[[list[Frame]], Any], timeout: float = 30.0) -> Any:
        """The first truthy value of `predicate(frames)` within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        async with self._changed:
            while not (found := predicate(self.frames)):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"condition not met in {timeout}s; frames: {self.frames[-8:]}"
                    )
                with suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), left)
            return found

    async def frames_within(self, seconds: float) -> list[Frame]:
        """Everything received up to `seconds` from now: the window of a negative check."""
        with suppress(AssertionError):
            await self.wait_for(lambda _: False, timeout=seconds)
        return list(self.frames)

    async def start(self, user_request: str, thread_id: str | None = None) -> str:
        """Send start_agent; the run id from its run_accepted."""
        message_id = await self.send(
            "start_agent", {"user_request": user_request, "thread_id": thread_id}
        )
        accepted = await self.wait_for(
            lambda fs: next(
                (f for f in fs if f.get("message_id") == message_id and f["type"] != "heartbeat"),
                None,
            )
        )
        assert accepted["type"] == "run_accepted", accepted
        return str(accepted["run_id"])

    def events(self, run_id: str) -> list[Frame]:
        return [f for f in self.frames if f.get("run_id") == run_id and f["type"] != "run_accepted"]

    async def wait_event(self, run_id: str, kind: str, timeout: float = 30.0) -> Frame:
        return await self.wait_for(
            lambda _: next((f for f in self.events(run_id) if f["type"] == kind), None), timeout
        )

    async def terminal(self, run_id: str, timeout: float = 30.0) -> Frame:
        return await self.wait_for(
            lambda _: next((f for f in self.events(run_id) if f["type"] in TERMINAL), None),
            timeout,
        )

    async def run(self, user_request: str, thread_id: str | None = None) -> list[Frame]:
        run_id = await self.start(user_request, thread_id)
        await self.terminal(run_id)
        return self.events(run_id)

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()
        with suppress(asyncio.CancelledError):
            await self._reader


def canary(label: str) -> str:
    """A per-item canary at the start of a text, where truncation keeps it."""
    return f"apexcanary-{uuid.uuid4().hex[:16]}-{label}"
