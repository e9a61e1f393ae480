"""Fakes for the load engine's tests: a virtual clock, scripted sessions, local servers."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from aiohttp import web

from pytest_apex.load.engine import Ops


class VirtualClock:
    """Time that moves only when every task is waiting on it: a 10 s stage runs in ms.

    `sleep` registers a wake-up; `drive()` (a task for the test's duration) lets the loop
    settle, then jumps to the earliest wake-up. Only for sessions that wait on this clock.
    """

    def __init__(self) -> None:
        self.t = 1000.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        future = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.t + max(0.0, seconds), next(self._order), future))
        await future

    async def drive(self) -> None:
        while True:
            for _ in range(50):
                await asyncio.sleep(0)
            while self._sleepers and self._sleepers[0][2].done():
                heapq.heappop(self._sleepers)  # cancelled sleeper
            if not self._sleepers:
                continue
            wake, _, future = heapq.heappop(self._sleepers)
            self.t = max(self.t, wake)
            future.set_result(None)


class ScriptedFactory:
    """A session factory whose sessions run `script(ops, user)`."""

    def __init__(
        self,
        script: Callable[[Ops, int], Awaitable[None]],
        probe: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.script = script
        self._probe = probe
        self.opened = self.closed = 0
        self.sessions = 0

    async def open(self) -> None:
        self.opened += 1

    async def close(self) -> None:
        self.closed += 1

    async def probe(self, timeout_s: float) -> None:
        if self._probe is not None:
            await self._probe()

    def session(self, user: int) -> Any:
        self.sessions += 1
        factory = self

        class _Session:
            async def run(self, ops: Ops) -> None:
                await factory.script(ops, user)

        return _Session()


async def ok(delay_s: float = 0.0) -> str:
    if delay_s:
        await asyncio.sleep(delay_s)
    return "ok"


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@asynccontextmanager
async def local_server(app: web.Application) -> AsyncIterator[str]:
    """`app` on 127.0.0.1, an ephemeral port, in this loop; yields its base URL."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def json_app(stall: dict[str, Any] | None = None, status: int = 200) -> web.Application:
    """``GET /`` answers a small JSON; with `stall`, the request arriving at or after
    ``stall["at"]`` blocks the whole process for ``stall["s"]`` once (a stop-the-world pause)."""

    async def handle(request: web.Request) -> web.Response:
        if stall is not None and not stall.get("done") and time.monotonic() >= stall["at"]:
            stall["done"] = True
            time.sleep(stall["s"])  # deliberately blocking: the process stalls
        return web.json_response({"ok": True}, status=status)

    app = web.Application()
    app.router.add_get("/", handle)
    return app


def ws_app() -> web.Application:
    async def echo(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for message in ws:
            await ws.send_str(message.data)
        return ws

    app = web.Application()
    app.router.add_get("/ws", echo)
    return app


async def within(deadline_s: float, condition: Callable[[], bool]) -> None:
    """Wait for `condition` (no fixed sleeps); fail after `deadline_s`."""
    end = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"condition not met within {deadline_s} s")
        await asyncio.sleep(0.01)


@contextmanager
def serving_in_a_thread(
    make_app: Callable[[], web.Application] = lambda: json_app(),
) -> Iterator[str]:
    """`make_app()` (`json_app`) in its own thread and loop, for workers in other processes."""
    ready: list[str] = []
    stop = threading.Event()

    def serve() -> None:
        async def main() -> None:
            async with local_server(make_app()) as url:
                ready.append(url)
                while not stop.is_set():
                    await asyncio.sleep(0.02)  # polling the stop flag of a test server

        asyncio.run(main())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    for _ in range(500):
        if ready:
            break
        thread.join(0.01)
    assert ready, "the local server did not start"
    try:
        yield ready[0]
    finally:
        stop.set()
        thread.join(5)
