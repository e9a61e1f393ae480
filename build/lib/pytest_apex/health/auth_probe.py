"""Does a service accept a token? On REST (status code) and on the WebSocket (handshake).

A rejection is only meaningful next to an acceptance: the suite probes the genuine token
the same way, on the same route, first (see `controls`), so a service that refuses
everything, a missing route or a probe that cannot connect is never mistaken for one that
refuses bad tokens. The WebSocket is reached through the adapter (`RawTokenSocket`): only
the adapter knows the app's socket, how a token is presented there and what it answers.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx
import websockets

from pytest_apex.adapters.base import RawTokenSocket
from pytest_apex.health.controls import Controlled


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
    """How a WebSocket exchange with a token ended.

    `accepted` means the app answered a message over the open socket; a close code (1008
    for policy violations) or an HTTP status on a refused upgrade means it refused.
    """

    transport: str
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
            return f"{self.transport}: accepted (the app answered)"
        if self.close_code is not None:
            return f"{self.transport}: closed with {self.close_code}"
        if self.http_status is not None:
            return f"{self.transport}: upgrade refused with HTTP {self.http_status}"
        return f"{self.transport}: {self.error or 'no answer'}"


async def ws_answer(
    sockets: RawTokenSocket, token: str, transport: str, timeout_s: float = 10.0
) -> WsAnswer:
    """Have the adapter use the app's socket with `token`; report how it ended."""
    try:
        await sockets.exchange_over_socket(token, transport, timeout_s)
    except websockets.ConnectionClosed as exc:
        code = exc.rcvd.code if exc.rcvd is not None else None
        return WsAnswer(transport, accepted=False, close_code=code, error=str(exc))
    except websockets.InvalidStatus as exc:
        return WsAnswer(transport, accepted=False, http_status=exc.response.status_code)
    except (TimeoutError, OSError, websockets.InvalidHandshake) as exc:
        return WsAnswer(transport, accepted=False, error=repr(exc))
    return WsAnswer(transport, accepted=True)


def controlled(
    control: RestAnswer | WsAnswer, probe: RestAnswer | WsAnswer, route: str
) -> Controlled:
    """A bad token's answer beside the genuine token's answer on the same route."""
    return Controlled(
        route=route,
        control_ok=control.accepted,
        control_seen=control.describe(),
        refused=probe.rejected,
        let_in=probe.accepted,
        seen=probe.describe(),
    )
