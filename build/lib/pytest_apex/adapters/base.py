"""How the suites act as a user of the app under test.

The suites never speak HTTP or WebSocket themselves: they ask an `AppAdapter` to log a
user in and get back a `UserSession` that can create threads and run the agent. The
reference Apex stack's adapter is the default; a team points the suites at its own app by
overriding the `apex_adapter` fixture in its conftest.py with an object of this shape.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass
class AgentRun:
    """One agent run as the user saw it on their socket."""

    run_id: str
    thread_id: str
    user_request: str
    events: list[dict[str, Any]] = field(default_factory=list)  # this run's events, in order
    foreign: list[dict[str, Any]] = field(default_factory=list)  # events of other runs seen
    seconds: float = 0.0  # from send to the terminal event
    first_event_seconds: float = 0.0  # from send to the first event of this run

    @property
    def event_types(self) -> list[str]:
        return [e.get("type", "") for e in self.events]

    @property
    def completed(self) -> bool:
        return bool(self.events) and self.events[-1].get("type") == "agent_completed"


@runtime_checkable
class UserSession(Protocol):
    """A logged-in user of the app under test."""

    user_id: str
    email: str

    async def create_thread(self, title: str) -> dict[str, Any]: ...

    async def list_threads(self) -> list[dict[str, Any]]: ...

    async def get_thread(self, thread_id: str) -> tuple[int, dict[str, Any]]: ...

    async def run_agent(self, thread_id: str, user_request: str, timeout: float) -> AgentRun: ...

    async def close(self) -> None: ...


@runtime_checkable
class AppAdapter(Protocol):
    """Creates logged-in users of the app under test."""

    async def login(self, email: str) -> UserSession: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class RawTokenSocket(Protocol):
    """Optional adapter capability: use the app's WebSocket presenting a raw token.

    The health suite proves that the socket refuses forged, tampered and expired tokens
    and, as the control that gives each refusal its meaning, lets the genuine token in on
    the same route. Only the adapter knows where the socket is, how a client presents a
    token there and which message the app must answer, so it does the exchange and the
    suite judges how it ended. An adapter without this capability gets its WebSocket
    token checks recorded as inconclusive, not passed.
    """

    # The ways a client can present a token, each probed on its own (e.g. a subprotocol,
    # which browsers can send, and an Authorization header, which other clients send).
    socket_token_transports: tuple[str, ...]

    async def exchange_over_socket(self, token: str, transport: str, timeout_s: float) -> None:
        """Open the socket presenting `token` the `transport` way, send one message the app
        must answer, wait for the answer, close. Returns when the app answered.

        Raises what `websockets` raises: `ConnectionClosed` when the app closed the socket
        (its close code says why), `InvalidStatus` when it refused the upgrade (the HTTP
        status), `TimeoutError`, `OSError` or `InvalidHandshake` when nothing usable
        happened within `timeout_s`.
        """
        ...
