"""Ready sessions over HTTP and WebSocket, on aiohttp.

aiohttp because on this kind of machine it does 3,400-8,000 requests/s per core at 50
concurrent tasks where httpx's pool collapses to 100-200. One `aiohttp.ClientSession` per
worker process, shared by all its virtual users (a `TCPConnector(limit=...)` bounds its
sockets), with a `DummyCookieJar`: virtual users must not share cookies through the pool,
and a session that needs them carries its own headers.

The client is made in `open()`, inside the worker's event loop, so the factory itself is a
plain picklable value; `client_factory` is the seam tests use to hand in a fake client.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import aiohttp
from yarl import URL

from pytest_apex.load.engine import LoadTargetUnreachable, OperationFailed, Ops
from pytest_apex.load.measure import CONNECTION, PROTOCOL, TIMEOUT, status_kind

ClientFactory = Callable[["HttpSessionFactory"], Any]


def _unreachable(url: str, timeout_s: float, exc: BaseException) -> LoadTargetUnreachable:
    return LoadTargetUnreachable(
        f"load target {url} unreachable: {type(exc).__name__}: {exc} "
        f"(probed once with a {timeout_s:g} s timeout before any stage ran)"
    )


async def probe_http(client: aiohttp.ClientSession, url: str, timeout_s: float) -> None:
    """Any HTTP answer (even a 404) means the target is there; no answer means it is not:
    one probe before any stage, so 150 users need not find out one by one."""
    try:
        async with asyncio.timeout(timeout_s):
            async with client.get(url) as response:
                await response.read()
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        raise _unreachable(url, timeout_s, exc) from exc


@dataclass(frozen=True)
class HttpRequest:
    """One timed request of a session: a status of 400 or more counts as an error."""

    name: str
    path: str = "/"
    method: str = "GET"
    body: bytes | None = None
    headers: tuple[tuple[str, str], ...] = ()


def _kind(exc: BaseException) -> str | None:
    # Order matters: aiohttp's connect errors are OSErrors (the engine reads their errno),
    # a server closing mid-answer is a connection error, a malformed answer a protocol one.
    if isinstance(exc, TimeoutError):
        return TIMEOUT
    if isinstance(exc, aiohttp.ClientConnectorError):
        return None  # OSError with an errno: `classify` tells refused from the rest
    if isinstance(exc, aiohttp.ClientPayloadError | aiohttp.ClientResponseError):
        return PROTOCOL
    if isinstance(exc, aiohttp.ClientConnectionError):
        return CONNECTION
    return None


@dataclass
class HttpSessionFactory:
    """Sessions that send `requests` in order against `base_url`, thinking `think_s` after."""

    base_url: str
    requests: tuple[HttpRequest, ...] = (HttpRequest("get"),)
    think_s: float = 0.0
    limit: int = 1000  # sockets per worker process
    timeout_s: float = 30.0
    # A pooled connection idle longer than the server keeps it (uvicorn: 5 s, gunicorn: 2 s)
    # is closed under the client: a user back from thinking would count the server's
    # housekeeping as a connection error. Busy connections never idle this long.
    keepalive_s: float = 1.0
    client_factory: ClientFactory | None = None
    _client: Any = field(default=None, init=False, repr=False, compare=False)
    _calls: tuple[tuple[str, URL, dict[str, Any]], ...] = field(
        default=(), init=False, repr=False, compare=False
    )

    def new_client(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=self.limit,
                limit_per_host=0,
                ttl_dns_cache=None,
                keepalive_timeout=self.keepalive_s,
            ),
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=self.timeout_s),
        )

    async def open(self) -> None:
        make = self.client_factory or HttpSessionFactory.new_client
        self._client = make(self)
        base = self.base_url.rstrip("/")
        # Parsed once: aiohttp would parse a string URL again on every request.
        self._calls = tuple(
            (
                request.method,
                URL(base + request.path),
                {
                    **({"data": request.body} if request.body is not None else {}),
                    **({"headers": dict(request.headers)} if request.headers else {}),
                },
            )
            for request in self.requests
        )

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def probe(self, timeout_s: float) -> None:
        assert self._client is not None
        await probe_http(self._client, self.base_url, timeout_s)

    def session(self, user: int) -> _HttpSession:
        return _HttpSession(self)

    async def fetch(self, index: int) -> int:
        """Request `requests[index]`, read the whole answer, return its status."""
        method, url, kwargs = self._calls[index]
        try:
            async with self._client.request(method, url, **kwargs) as response:
                await response.read()
                status: int = response.status
        except Exception as exc:
            kind = _kind(exc)
            if kind is None:
                raise
            raise OperationFailed(kind, f"{type(exc).__name__}: {exc}") from exc
        if status >= 400:
            name = self.requests[index].name
            raise OperationFailed(status_kind(status), f"HTTP {status} from {name}")
        return status


class _HttpSession:
    __slots__ = ("_factory",)

    def __init__(self, factory: HttpSessionFactory) -> None:
        self._factory = factory

    async def run(self, ops: Ops) -> None:
        factory = self._factory
        for index, request in enumerate(factory.requests):
            await ops.timed(request.name, factory.fetch(index))
        if factory.think_s:
            await ops.think(factory.think_s)


@dataclass
class WebSocketSessionFactory:
    """Sessions that hold one WebSocket each and time message round trips on it.

    The session connects (timed as ``ws_connect``), then until the stage ends sends
    `message` every `interval_s` and times the first reply (``ws_message``): the message
    latency k6 has no metric for.
    """

    url: str
    message: str = "ping"
    interval_s: float = 1.0
    timeout_s: float = 30.0
    headers: Mapping[str, str] = field(default_factory=dict)
    _client: Any = field(default=None, init=False, repr=False, compare=False)

    async def open(self) -> None:
        self._client = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            cookie_jar=aiohttp.DummyCookieJar(),
        )

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def probe(self, timeout_s: float) -> None:
        try:
            async with asyncio.timeout(timeout_s):
                async with self._client.ws_connect(self.url, headers=self.headers) as ws:
                    await ws.close()
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise _unreachable(self.url, timeout_s, exc) from exc

    def session(self, user: int) -> _WebSocketSession:
        return _WebSocketSession(self)

    async def connect(self) -> aiohttp.ClientWebSocketResponse:
        try:
            return cast(
                aiohttp.ClientWebSocketResponse,
                await self._client.ws_connect(
                    self.url, headers=self.headers, timeout=aiohttp.ClientWSTimeout(ws_close=5.0)
                ),
            )
        except aiohttp.WSServerHandshakeError as exc:
            raise OperationFailed(status_kind(exc.status), str(exc)) from exc

    async def roundtrip(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        await ws.send_str(self.message)
        async with asyncio.timeout(self.timeout_s):
            reply = await ws.receive()
        if reply.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
            raise OperationFailed(CONNECTION, f"WebSocket answered {reply.type.name}")


class _WebSocketSession:
    __slots__ = ("_factory",)

    def __init__(self, factory: WebSocketSessionFactory) -> None:
        self._factory = factory

    async def run(self, ops: Ops) -> None:
        factory = self._factory
        ws = await ops.timed("ws_connect", factory.connect())
        try:
            while True:
                await ops.timed("ws_message", factory.roundtrip(ws))
                await ops.think(factory.interval_s)
        finally:
            await ws.close()
