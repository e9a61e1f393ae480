"""The HTTP seam the adapters send through: aiohttp by default, any `HttpClient` in tests.

Thousands of simulated users send tens of thousands of requests through one adapter, so its
client is on the suites' hot path. httpx's connection pool costs the client a core at a few
hundred requests a second (most of it assigning requests to connections and asking which
async library runs); aiohttp does the same work for a fraction. `HttpxClient` remains for
tests that answer in-process through an httpx transport, and for anyone who wants it.

Both clients keep no cookies: every simulated user carries its own credentials in its
headers, and a jar shared by all of them would hand one user's session cookie to the next.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

import aiohttp
import httpx

_TIMEOUT_S: Final = 30.0
_MAX_CONNECTIONS: Final = 256
# A pooled connection idle for longer than the server keeps it open (gunicorn: 2 s, uvicorn:
# 5 s) is closed under the client's feet: reuse only while surely fresh.
_KEEPALIVE_S: Final = 1.0


class StaleConnection(Exception):
    """The server closed the connection as the request was sent or read (a pooled one
    it had already given up, usually): whether the request reached the app is unknown."""


@dataclass(frozen=True)
class Reply:
    """What one request got back: the status and the raw body."""

    status: int
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")


class HttpClient(Protocol):
    """Sends one request and returns its reply; raises `StaleConnection` on a dropped one."""

    async def request(
        self, method: str, url: str, *, json: Any = None, headers: Mapping[str, str] | None = None
    ) -> Reply: ...

    async def aclose(self) -> None: ...


class AiohttpClient:
    """`HttpClient` on aiohttp; the session is made on first use, inside the running loop."""

    def __init__(self, *, timeout_s: float = _TIMEOUT_S) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                cookie_jar=aiohttp.DummyCookieJar(),
                connector=aiohttp.TCPConnector(
                    limit=_MAX_CONNECTIONS, keepalive_timeout=_KEEPALIVE_S
                ),
            )
        return self._session

    async def request(
        self, method: str, url: str, *, json: Any = None, headers: Mapping[str, str] | None = None
    ) -> Reply:
        try:
            async with self._client().request(method, url, json=json, headers=headers) as reply:
                return Reply(reply.status, await reply.read())
        except aiohttp.ClientConnectorError:
            raise  # no connection was made: nothing reached the app, and nothing was stale
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
            raise StaleConnection(f"{method} {url}: {type(exc).__name__}: {exc}") from exc

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class HttpxClient:
    """`HttpClient` on httpx: in-process apps through a `transport`, in tests."""

    def __init__(
        self, transport: httpx.AsyncBaseTransport | None = None, *, timeout_s: float = _TIMEOUT_S
    ) -> None:
        self._client = httpx.AsyncClient(
            transport=transport,
            timeout=httpx.Timeout(timeout_s),
            limits=httpx.Limits(
                max_connections=_MAX_CONNECTIONS,
                max_keepalive_connections=_MAX_CONNECTIONS,
                keepalive_expiry=_KEEPALIVE_S,
            ),
        )

    async def request(
        self, method: str, url: str, *, json: Any = None, headers: Mapping[str, str] | None = None
    ) -> Reply:
        try:
            response = await self._client.request(method, url, json=json, headers=headers)
        except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
            raise StaleConnection(f"{method} {url}: {type(exc).__name__}: {exc}") from exc
        self._client.cookies.clear()  # no cookie outlives the request (see the module doc)
        return Reply(response.status_code, response.content)

    async def aclose(self) -> None:
        await self._client.aclose()
