"""A small app for the load suite's tests, run in its own process (no Docker).

``python -m tests.plugin.fake_load_app MODE`` serves on 127.0.0.1 (an ephemeral port),
prints its base URL on the first line of stdout, and serves until terminated. Its own
process, so the load generator's CPU (which the suite judges) is the generator's alone.

Modes: ``clean``; ``slow``: every answer takes `SLOW_S` once more than `FAST_USERS` users
have logged in (a later stage is slow, the first is not); ``errors``: every fifth listing
answers 500; ``agent``: also the reference stack's /ws agent protocol (run_accepted, three
events, agent_completed); ``leak``: every write keeps `LEAK_BYTES` for ever. Every mode
answers ``/health`` and ``/metrics`` (its real resident memory, as prometheus_client names it).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
from typing import Final

import psutil
from aiohttp import web

from pytest_apex.app.model import (
    AppDescription,
    Auth,
    Capabilities,
    HealthRoute,
    Login,
    MetricsRoute,
    Resource,
    Service,
    Users,
)

SLOW_S: Final = 0.15
FAST_USERS: Final = 2
ERROR_EVERY: Final = 5
LEAK_BYTES: Final = 256 * 1024


def description(*, agent: bool = False) -> AppDescription:
    """How the suite sees this app (built in Python, as a conftest.py may do it)."""
    health = HealthRoute("/health")
    metrics = MetricsRoute("/metrics")
    services = {"api": Service("api", "api", liveness=health, metrics=metrics)}
    if agent:  # the reference stack's adapter wants its own service names
        services = {
            "auth": Service("auth", "auth", liveness=health),
            "backend": Service("backend", "api", liveness=health, metrics=metrics),
        }
    api = "backend" if agent else "api"
    return AppDescription(
        name="fake-load",
        services=services,
        auth=Auth(
            login=Login(
                "auth" if agent else "api",
                "/login",
                {"username": "{username}"},
                token_field="access_token",
                user_id_field="user.id",
            )
        ),
        users=Users(username="user{index}-{run}"),
        resources=(
            Resource(
                "items",
                api,
                "/items",
                item="/items/{id}",
                create={"title": "{canary}"},
                sub_resources=(
                    Resource("notes", api, "/items/{parent_id}/notes", create={"text": "{canary}"}),
                ),
            ),
        ),
        capabilities=Capabilities(agent_runs=agent),
        adapter="pytest_apex.adapters.apex:from_description" if agent else "rest",
    )


def app(mode: str) -> web.Application:
    logins = itertools.count(1)
    listings = itertools.count(1)
    ids = itertools.count(1)
    state = {"logins": 0}
    kept: list[bytearray] = []

    async def pace() -> None:
        if mode == "slow" and state["logins"] > FAST_USERS:
            await asyncio.sleep(SLOW_S)

    async def login(request: web.Request) -> web.Response:
        body = await request.json()
        state["logins"] = next(logins)
        await pace()
        name = body["username"]
        return web.json_response({"access_token": f"token-{name}", "user": {"id": name}})

    async def listing(request: web.Request) -> web.Response:
        if not request.headers.get("Authorization", "").startswith("Bearer token-"):
            return web.json_response({"error": "unauthorised"}, status=401)
        await pace()
        if mode == "errors" and next(listings) % ERROR_EVERY == 0:
            return web.json_response({"error": "boom"}, status=500)
        return web.json_response([])

    async def create(request: web.Request) -> web.Response:
        await pace()
        if mode == "leak":  # every write kept for ever, each page touched so RSS grows
            kept.append(bytearray(b"\x01" * LEAK_BYTES))
        return web.json_response({"id": str(next(ids))}, status=201)

    async def root(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "pass"})

    async def metrics(request: web.Request) -> web.Response:
        # What prometheus_client's process collector exports, from the real process.
        rss = psutil.Process().memory_info().rss
        page = f"# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes {rss}\n"
        return web.Response(text=page, content_type="text/plain")

    async def socket(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(
            protocols=[
                p.strip()
                for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")
                if p.strip()
            ][:1]
        )
        await ws.prepare(request)
        async for message in ws:
            frame = json.loads(message.data)
            if frame.get("type") != "start_agent":
                continue
            run_id = f"run-{next(ids)}"
            await ws.send_json(
                {"type": "run_accepted", "run_id": run_id, "message_id": frame["message_id"]}
            )
            await ws.send_json({"type": "heartbeat"})
            for kind in ("agent_started", "agent_thinking", "agent_completed"):
                await asyncio.sleep(0.005)
                await ws.send_json({"type": kind, "run_id": run_id, "payload": {}})
        return ws

    application = web.Application()
    application.router.add_get("/", root)
    application.router.add_get("/health", health)
    application.router.add_get("/metrics", metrics)
    application.router.add_post("/login", login)
    application.router.add_get("/items", listing)
    application.router.add_post("/items", create)
    application.router.add_post("/items/{id}/notes", create)
    application.router.add_get("/ws", socket)
    return application


async def serve(mode: str) -> None:
    runner = web.AppRunner(app(mode), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    print(f"http://127.0.0.1:{port}", flush=True)
    await asyncio.Event().wait()  # until terminated


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1] if len(sys.argv) > 1 else "clean"))
