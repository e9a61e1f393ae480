"""The reference stack's load session: the described REST steps plus an agent run over /ws.

Each virtual user keeps one WebSocket (opened on its first run, timed as ``ws_connect``)
and starts one agent run per session in the thread it posts to. Two times come out of a
run, both from the moment the request was sent: to the run's first event
(``agent_first_event``, a milestone inside the run) and to its final one
(``agent_final_event``). A run that ends in ``agent_error`` or ``agent_cancelled`` counts
as an error of kind ``agent_failed``; a refusal (an ``error`` frame answering the request)
as ``agent_refused``.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, cast

import aiohttp

from pytest_apex.adapters.apex import TERMINAL_EVENTS, jwt_subprotocol
from pytest_apex.adapters.load import ITEM_TEXT, RestLoadSessions, UserState
from pytest_apex.load.engine import OperationFailed, Ops
from pytest_apex.load.measure import CONNECTION, PROTOCOL, status_kind

AGENT_FAILED: Final = "agent_failed"
AGENT_REFUSED: Final = "agent_refused"
_CHATTER: Final = frozenset({"heartbeat", "pong"})


@dataclass
class ApexLoadSessions(RestLoadSessions):
    """`RestLoadSessions` with an agent run per session over the backend's WebSocket."""

    ws_url: str = ""

    async def agent(self, ops: Ops, state: UserState, user: int) -> None:
        if not state.parent_id:
            return  # no thread to run in (its creation failed and was counted)
        if state.socket is None or state.socket.closed:
            state.socket = await ops.timed("ws_connect", self._connect(state))
        started = ops.now()

        def first_event() -> None:
            ops.record_since("agent_first_event", started)

        try:
            await ops.timed(
                "agent_final_event",
                self._run(state, f"{ITEM_TEXT.format(user=user)} run", first_event),
            )
        except OperationFailed as exc:
            if exc.kind not in (AGENT_FAILED, AGENT_REFUSED):
                await self.close_user(state)  # a broken socket: the next session reconnects
            raise

    async def _connect(self, state: UserState) -> aiohttp.ClientWebSocketResponse:
        try:
            return cast(
                aiohttp.ClientWebSocketResponse,
                await self._client.ws_connect(
                    self.ws_url,
                    protocols=(jwt_subprotocol(state.token),),
                    heartbeat=None,
                    max_msg_size=2**20,
                ),
            )
        except aiohttp.WSServerHandshakeError as exc:
            raise OperationFailed(status_kind(exc.status), str(exc)) from exc

    async def _run(self, state: UserState, text: str, on_first: Callable[[], None]) -> None:
        ws = state.socket
        key = str(uuid.uuid4())
        await ws.send_str(
            json.dumps(
                {
                    "type": "start_agent",
                    "payload": {"user_request": text, "thread_id": state.parent_id},
                    "message_id": key,
                }
            )
        )
        run_id = ""
        seen_first = False
        async with asyncio.timeout(self.scenario.agent_timeout_s):
            while True:
                message = await ws.receive()
                if message.type != aiohttp.WSMsgType.TEXT:
                    raise OperationFailed(CONNECTION, f"the socket answered {message.type.name}")
                try:
                    frame = json.loads(message.data)
                except ValueError as exc:
                    raise OperationFailed(PROTOCOL, "a frame that is not JSON") from exc
                kind = frame.get("type")
                if kind in _CHATTER:
                    continue
                if kind == "run_accepted" and frame.get("message_id") == key:
                    run_id = str(frame.get("run_id") or "")
                    continue
                if kind == "error" and frame.get("message_id") == key:
                    raise OperationFailed(AGENT_REFUSED, str(frame.get("payload"))[:200])
                if not run_id or frame.get("run_id") != run_id:
                    continue  # another run's event (the isolation suite judges those)
                if not seen_first:
                    seen_first = True
                    on_first()
                if kind in TERMINAL_EVENTS:
                    if kind != "agent_completed":
                        raise OperationFailed(AGENT_FAILED, f"the run ended in {kind}")
                    return

    async def close_user(self, state: UserState) -> None:
        socket, state.socket = state.socket, None
        if socket is not None:
            await socket.close()
