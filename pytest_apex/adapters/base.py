"""How the suites act as a user of the app under test: the adapter contract.

The suites never speak HTTP or WebSocket themselves. They ask an `AppAdapter` to log a user
in (`login(username)`, the name built from the description's ``users.username`` template)
and get back a session. What a session must offer depends on what the suite does with it:

- every session: `user_id` (the app's own id of the user, as it appears in the app's data),
  `username` and `email` (what the user was created with; may be the same), `token` (the
  bearer token, or None when the app uses none: the token checks then skip), `close()`;
- REST isolation (`ResourceSession`): `create`, `read`, `update` and `list_all` on the
  resources the description names. Each returns the `Answer`(s) it received, whatever their
  status: the suite scans every body, error bodies included. Statuses 401, 403 and 404 count
  as the app refusing another user's item; a 5xx or a transport error is no answer at all
  (never a refusal). A created item's body must carry its id at the described ``id_field``;
- agent isolation (`AgentSession`): `create_thread` (a dict with at least ``id``),
  `list_threads`, `get_thread` (status and body) and `run_agent`, which returns the run's own
  events and every other event the user's socket received (`AgentRun.foreign`);
- the health suite's WebSocket token checks (`RawTokenSocket`, on the adapter).

Errors surface as exceptions of any kind; the suites count them per user, with an example,
and go on with the other users. `pytest_apex.adapters.rest.RestAdapter` implements the REST
part from the description alone; `pytest_apex.adapters.apex.ApexAdapter` adds agent runs for
the reference stack. A team with more to do names its own factory in the description
(``adapter = "module:factory"``) or overrides the `apex_adapter` fixture.
"""

from __future__ import annotations

from collections.abc import Mapping
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
    """A logged-in user of the app under test (what every suite needs)."""

    user_id: str
    username: str
    email: str

    async def close(self) -> None: ...


@runtime_checkable
class ResourceSession(UserSession, Protocol):
    """A user acting on the resources the description names (REST isolation)."""

    async def create(
        self, name: str, values: Mapping[str, str], parent_id: str = "", *, resend: bool = False
    ) -> Any: ...

    async def read(self, name: str, item_id: str) -> Any: ...

    async def update(self, name: str, item_id: str, values: Mapping[str, str]) -> Any: ...

    async def list_all(
        self, name: str, parent_id: str = "", page_size: int | None = None
    ) -> tuple[list[Any], list[Any]]: ...


@runtime_checkable
class AgentSession(UserSession, Protocol):
    """A user running the app's agent over its WebSocket (agent isolation)."""

    async def create_thread(self, title: str) -> dict[str, Any]: ...

    async def list_threads(self) -> list[dict[str, Any]]: ...

    async def get_thread(self, thread_id: str) -> tuple[int, dict[str, Any]]: ...

    async def run_agent(self, thread_id: str, user_request: str, timeout: float) -> AgentRun: ...


@runtime_checkable
class AppAdapter(Protocol):
    """Creates logged-in users of the app under test."""

    async def login(self, username: str) -> UserSession: ...

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
