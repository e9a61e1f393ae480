"""The adapter for the reference Apex stack (fixtures/stack): dev login, REST threads, /ws runs.

Logging in and the REST resources come from the stack's app description through the
zero-code REST adapter; this adapter adds what no description can say: agent runs streamed
over the stack's WebSocket, and the raw-token socket exchange the health suite probes.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import httpx
import websockets
from websockets.asyncio.client import ClientConnection

from pytest_apex.adapters.base import AgentRun, FrameSink, RunSignal
from pytest_apex.adapters.http import HttpClient
from pytest_apex.adapters.rest import AdapterError, Answer, RestAdapter, RestUserSession
from pytest_apex.app import AppDescription
from pytest_apex.reference import reference_description

if TYPE_CHECKING:  # the load sessions build on this module
    from pytest_apex.adapters.apex_load import ApexLoadSessions
    from pytest_apex.adapters.load import LoadScenario

TERMINAL_EVENTS = frozenset({"agent_completed", "agent_error", "agent_cancelled"})
# How each terminal event ends a run, in the suite's words (`RunSignal.terminal`).
TERMINAL_OUTCOMES = {
    "agent_completed": "completed",
    "agent_error": "failed",
    "agent_cancelled": "cancelled",
}
# The simulated agent's tool fails on a request that starts with this (its error path).
FAILING_PREFIX = "/fail "
# How a client presents its token to /ws: the `jwt.<base64url>` subprotocol (what browsers
# can send) or an Authorization header (what other clients send).
SOCKET_TOKEN_TRANSPORTS: tuple[str, ...] = ("subprotocol", "header")


def jwt_subprotocol(token: str) -> str:
    """The `jwt.<base64url token>` WebSocket subprotocol the backend accepts."""
    return "jwt." + base64.urlsafe_b64encode(token.encode()).decode().rstrip("=")


def ws_url(http_url: str) -> str:
    return http_url.replace("http://", "ws://", 1).replace("https://", "wss://", 1) + "/ws"


def _token_presented(token: str, transport: str) -> dict[str, Any]:
    """`websockets.connect` arguments that present `token` the `transport` way."""
    if transport == "subprotocol":
        return {"subprotocols": [websockets.Subprotocol(jwt_subprotocol(token))]}
    if transport == "header":
        return {"additional_headers": {"Authorization": f"Bearer {token}"}}
    raise ValueError(f"unknown token transport {transport!r}; known: {SOCKET_TOKEN_TRANSPORTS}")


def from_description(description: AppDescription, endpoints: Mapping[str, str]) -> ApexAdapter:
    """The adapter factory the reference stack's description names (``adapter = ...``)."""
    return ApexAdapter(endpoints, description=description)


class ApexAdapter(RestAdapter):
    """Logs users in through auth and acts for them on the backend."""

    def __init__(
        self,
        endpoints: Mapping[str, str],
        *,
        description: AppDescription | None = None,
        http: HttpClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        missing = {"auth", "backend"} - set(endpoints)
        if missing:
            raise ValueError(
                f"the Apex adapter needs the endpoints {sorted(missing)}; got {sorted(endpoints)}"
            )
        super().__init__(
            description or reference_description(), endpoints, http=http, transport=transport
        )
        self.auth_url = self.endpoints["auth"]
        self.backend_url = self.endpoints["backend"]

    async def login(self, username: str) -> ApexUserSession:
        session = await super().login(username)
        return ApexUserSession(self, session.user_id, session.username, session.token)

    def load_sessions(self, scenario: LoadScenario) -> ApexLoadSessions:
        """`LoadSessions`: the described REST steps, plus an agent run per session."""
        from pytest_apex.adapters.apex_load import ApexLoadSessions
        from pytest_apex.adapters.load import rest_load_sessions

        sessions = rest_load_sessions(
            self.description,
            self.endpoints,
            scenario,
            ApexLoadSessions,
            ws_url=ws_url(self.backend_url),
        )
        assert isinstance(sessions, ApexLoadSessions)
        return sessions

    socket_token_transports = SOCKET_TOKEN_TRANSPORTS

    async def exchange_over_socket(self, token: str, transport: str, timeout_s: float) -> None:
        """`RawTokenSocket`: open /ws with `token`, `ping`, return on the `pong`."""
        async with asyncio.timeout(timeout_s):
            async with websockets.connect(
                ws_url(self.backend_url), open_timeout=None, **_token_presented(token, transport)
            ) as ws:
                message_id = str(uuid.uuid4())
                await ws.send(json.dumps({"type": "ping", "payload": {}, "message_id": message_id}))
                while json.loads(await ws.recv()).get("type") != "pong":
                    pass  # heartbeats and other chatter before the answer


def _ok(answer: Answer) -> Any:
    """The JSON body of a 2xx answer; anything else raises, saying what came back."""
    if not answer.ok:
        raise AdapterError(f"{answer.describe()}: {answer.text[:200]}")
    return answer.body


class ApexUserSession(RestUserSession):
    """One logged-in user: REST calls with their token, agent runs on their own socket."""

    adapter: ApexAdapter

    def __init__(self, adapter: ApexAdapter, user_id: str, email: str, token: str) -> None:
        super().__init__(adapter, user_id=user_id, username=email, token=token)
        self._ws: ClientConnection | None = None
        self._lock = asyncio.Lock()

    async def create_thread(self, title: str) -> dict[str, Any]:
        url = f"{self.adapter.backend_url}/api/threads"
        # A test user's thread: resent once if the connection dropped (a duplicate is theirs).
        answer = await self.request("POST", url, {"title": title}, resend=True)
        return dict(_ok(answer))

    async def list_threads(self) -> list[dict[str, Any]]:
        answer = await self.request("GET", f"{self.adapter.backend_url}/api/threads")
        return list(_ok(answer))

    async def get_thread(self, thread_id: str) -> tuple[int, dict[str, Any]]:
        answer = await self.request("GET", f"{self.adapter.backend_url}/api/threads/{thread_id}")
        return answer.status, answer.body if isinstance(answer.body, dict) else {}

    async def run_status(self, run_id: str) -> Answer:
        return await self.request("GET", f"{self.adapter.backend_url}/api/runs/{run_id}")

    async def list_thread_pages(self, page_size: int | None = None) -> list[Answer]:
        _items, pages = await self.list_all("threads", "", page_size)
        return pages

    async def read_thread(self, thread_id: str) -> list[Answer]:
        thread = await self.read("threads", thread_id)
        _items, messages = await self.list_all("messages", thread_id)
        return [thread, *messages]

    def failing_request(self, text: str) -> str:
        return FAILING_PREFIX + text

    def run_signal(self, frame: Any) -> RunSignal | None:
        """The stack's protocol: run_accepted and error frames answer a message_id; agent
        events carry their run_id, and three of them end a run."""
        if not isinstance(frame, dict):
            return None
        kind = frame.get("type")
        key = frame.get("message_id")
        key = key if isinstance(key, str) else ""
        if kind == "run_accepted":
            return RunSignal(run_id=str(frame.get("run_id") or ""), request_key=key, accepted=True)
        if kind == "error":
            return RunSignal(request_key=key, refused=True) if key else None
        run_id = frame.get("run_id")
        if not isinstance(run_id, str) or not run_id:
            return None
        return RunSignal(run_id=run_id, terminal=TERMINAL_OUTCOMES.get(str(kind), ""))

    async def open_stream(self, on_frame: FrameSink) -> ApexStream:
        ws = await websockets.connect(
            ws_url(self.adapter.backend_url),
            subprotocols=[websockets.Subprotocol(jwt_subprotocol(self.token))],
            open_timeout=30,
            max_size=2**20,
            # The suite reads for the socket's whole life; the app's heartbeat keeps it busy.
            ping_interval=None,
        )
        return ApexStream(ws, on_frame)

    async def connect(self) -> ClientConnection:
        if self._ws is None:
            self._ws = await websockets.connect(
                ws_url(self.adapter.backend_url),
                subprotocols=[websockets.Subprotocol(jwt_subprotocol(self.token))],
                open_timeout=30,
                max_size=2**20,
            )
        return self._ws

    async def run_agent(self, thread_id: str, user_request: str, timeout: float) -> AgentRun:
        """Start a run and collect its events until the terminal one (or the deadline)."""
        async with self._lock:  # one run at a time per session keeps attribution exact
            ws = await self.connect()
            message_id = str(uuid.uuid4())
            started = time.monotonic()
            deadline = started + timeout
            await ws.send(
                json.dumps(
                    {
                        "type": "start_agent",
                        "payload": {"user_request": user_request, "thread_id": thread_id},
                        "message_id": message_id,
                    }
                )
            )
            run = AgentRun(run_id="", thread_id=thread_id, user_request=user_request)
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    raw = await asyncio.wait_for(ws.recv(), remaining)
                except TimeoutError:
                    break
                message = json.loads(raw)
                kind = message.get("type")
                if kind == "run_accepted" and message.get("message_id") == message_id:
                    run.run_id = message.get("run_id", "")
                    continue
                if kind in ("heartbeat", "pong", "run_accepted"):
                    continue
                if kind == "error":
                    run.events.append(message)
                    break
                mine = (
                    message.get("run_id") == run.run_id
                    and (message.get("payload") or {}).get("user_id") == self.user_id
                )
                if not mine:
                    run.foreign.append(message)
                    continue
                if not run.events:
                    run.first_event_seconds = time.monotonic() - started
                run.events.append(message)
                if kind in TERMINAL_EVENTS:
                    break
            run.seconds = time.monotonic() - started
            return run

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
            self._ws = None


class ApexStream:
    """One socket of a user, read by its own task for its whole life (`AgentStream`)."""

    def __init__(self, ws: ClientConnection, on_frame: FrameSink) -> None:
        self._ws = ws
        self._on_frame = on_frame
        self._closed_reason = ""
        self._reader = asyncio.create_task(self._read(), name="apex-stream-reader")

    @property
    def closed_reason(self) -> str:
        return self._closed_reason

    async def _read(self) -> None:
        try:
            async for message in self._ws:
                text = message if isinstance(message, str) else message.decode(errors="replace")
                self._on_frame(text)
        except websockets.ConnectionClosed as exc:
            self._closed_reason = f"closed {exc.rcvd.code if exc.rcvd else 'abnormally'}: " + (
                exc.rcvd.reason if exc.rcvd else str(exc)
            )
        except Exception as exc:  # the reader ends; the scenario sees why
            self._closed_reason = f"{type(exc).__name__}: {exc}"
        else:
            rcvd = self._ws.close_code
            self._closed_reason = f"closed {rcvd}: {self._ws.close_reason or ''}"

    async def wait_closed(self, timeout: float) -> bool:
        await asyncio.wait({self._reader}, timeout=timeout)
        return self._reader.done()

    async def _send(self, kind: str, payload: dict[str, Any]) -> str:
        key = str(uuid.uuid4())
        await self._ws.send(json.dumps({"type": kind, "payload": payload, "message_id": key}))
        return key

    async def start_run(self, thread_id: str, user_request: str) -> str:
        return await self._send(
            "start_agent", {"user_request": user_request, "thread_id": thread_id}
        )

    async def cancel_run(self, run_id: str) -> str:
        return await self._send("cancel_run", {"run_id": run_id})

    async def chatter(self, count: int) -> None:
        for _ in range(count):
            await self._send("ping", {})

    async def close(self, *, abrupt: bool = False) -> None:
        if abrupt:
            self._ws.transport.abort()  # no closing handshake: a dropped connection
        else:
            await self._ws.close()
        await asyncio.wait({self._reader}, timeout=10)
        if not self._reader.done():
            self._reader.cancel()
