"""Does a service accept a token? On REST (status code) and on the WebSocket (handshake).

A rejection is only meaningful next to an acceptance: the suite probes the genuine token
the same way first, so a service that refuses everything (or a probe that cannot connect)
is never mistaken for one that refuses bad tokens.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Literal

import httpx
import websockets
from websockets.asyncio.client import ClientConnection

from pytest_apex.adapters.apex import jwt_subprotocol, ws_url

WsTransport = Literal["subprotocol", "header"]
WS_TRANSPORTS: tuple[WsTransport, ...] = ("subprotocol", "header")


@dataclass(frozen=True)
class RestAnswer:
    url: str
    status_code: int
    error: str = ""

    @property
    def accepted(self) -> bool:
        return 200 <= self.status_code < 300

    @property
    def rejected(self) -> bool:
        """Refused as unauthenticated; a 404, a 500 or no answer at all is not a refusal."""
        return self.status_code in (401, 403)

    def describe(self) -> str:
        return f"{self.url}: {self.error or self.status_code}"


async def rest_answer(client: httpx.AsyncClient, url: str, token: str) -> RestAnswer:
    try:
        response = await client.get(url, headers={"Authorization": f"Bearer {token}"})
    except httpx.HTTPError as exc:
        return RestAnswer(url, 0, error=repr(exc))
    return RestAnswer(url, response.status_code)


@dataclass(frozen=True)
class WsAnswer:
    """How a WebSocket handshake with a token ended.

    `accepted` means the server answered a ping over the open socket; a close code (1008
    for policy violations) or an HTTP status on a refused upgrade means it refused.
    """

    transport: WsTransport
    accepted: bool
    close_code: int | None = None
    http_status: int | None = None
    error: str = ""

    @property
    def rejected(self) -> bool:
        """Refused explicitly (close code or HTTP status), not merely silent."""
        return not self.accepted and (self.close_code is not None or self.http_status is not None)

    def describe(self) -> str:
        if self.accepted:
            return f"{self.transport}: accepted (answered ping)"
        if self.close_code is not None:
            return f"{self.transport}: closed with {self.close_code}"
        if self.http_status is not None:
            return f"{self.transport}: upgrade refused with HTTP {self.http_status}"
        return f"{self.transport}: {self.error or 'no answer'}"


def _connect_args(transport: WsTransport, token: str) -> dict[str, object]:
    if transport == "subprotocol":
        return {"subprotocols": [websockets.Subprotocol(jwt_subprotocol(token))]}
    return {"additional_headers": {"Authorization": f"Bearer {token}"}}


async def _pong(ws: ClientConnection, timeout_s: float) -> bool:
    await ws.send(json.dumps({"type": "ping", "payload": {}, "message_id": "auth-probe"}))
    async with asyncio.timeout(timeout_s):
        while True:
            message = json.loads(await ws.recv())
            if message.get("type") == "pong":
                return True


async def ws_answer(
    backend_url: str, token: str, transport: WsTransport, timeout_s: float = 10.0
) -> WsAnswer:
    """Open `/ws` with `token`, ping, and report whether the server played along."""
    try:
        async with websockets.connect(
            ws_url(backend_url), open_timeout=timeout_s, **_connect_args(transport, token)
        ) as ws:
            await _pong(ws, timeout_s)
            return WsAnswer(transport, accepted=True)
    except websockets.ConnectionClosed as exc:
        code = exc.rcvd.code if exc.rcvd is not None else None
        return WsAnswer(transport, accepted=False, close_code=code, error=str(exc))
    except websockets.InvalidStatus as exc:
        return WsAnswer(transport, accepted=False, http_status=exc.response.status_code)
    except (TimeoutError, OSError, websockets.InvalidHandshake) as exc:
        return WsAnswer(transport, accepted=False, error=repr(exc))
