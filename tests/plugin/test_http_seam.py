"""The adapters' HTTP seam against a real server on loopback (aiohttp's own test server)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from pytest_apex.adapters.http import AiohttpClient, StaleConnection


async def _echo_cookie(request: web.Request) -> web.Response:
    response = web.json_response({"cookie": request.headers.get("Cookie", "")})
    response.set_cookie("session", "of-whoever-logged-in-first")
    return response


async def _hang_up(request: web.Request) -> web.StreamResponse:
    assert request.transport is not None
    request.transport.abort()  # the connection ends before any answer
    return web.Response()


@pytest.fixture
async def server() -> AsyncIterator[TestServer]:
    app = web.Application()
    app.router.add_get("/cookie", _echo_cookie)
    app.router.add_post("/hang-up", _hang_up)
    async with TestServer(app, host="127.0.0.1") as running:
        yield running


async def test_no_cookie_a_server_sets_reaches_the_next_request(server: TestServer) -> None:
    client = AiohttpClient()
    first = await client.request("GET", str(server.make_url("/cookie")))
    second = await client.request("GET", str(server.make_url("/cookie")))
    await client.aclose()
    # One adapter serves every simulated user: a shared jar would log user B in as user A.
    assert (first.status, first.text, second.text) == (
        200,
        '{"cookie": ""}',
        '{"cookie": ""}',
    )


async def test_a_connection_closed_before_the_answer_is_a_stale_connection(
    server: TestServer,
) -> None:
    client = AiohttpClient()
    with pytest.raises(StaleConnection, match=r"POST .*/hang-up"):
        await client.request("POST", str(server.make_url("/hang-up")), json={"a": 1})
    await client.aclose()


async def test_a_refused_connection_is_not_a_stale_one() -> None:
    # Nothing reached the app, so there is nothing to resend: the caller sees the refusal.
    client = AiohttpClient()
    with pytest.raises(aiohttp.ClientConnectorError):
        await client.request("GET", "http://127.0.0.1:1/refused")
    await client.aclose()
