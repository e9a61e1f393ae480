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
- streaming isolation (`StreamingAgentSession`): `open_stream(on_frame)` opens one more
  socket of the user and hands *every* frame it receives, of any type, to `on_frame` for the
  socket's whole life; the returned `AgentStream` starts and cancels runs, sends harmless
  chatter (to meet rate limits) and closes, gently or abruptly. `run_signal(frame)` reads
  the app's protocol for the suite: which run a frame belongs to, whether it accepts or
  refuses a request, whether it ends the run and how. `failing_request(text)` is a request
  that makes the agent fail (its error path), `run_status(run_id)` the app's answer about a
  run, `list_thread_pages` and `read_thread` the REST views of threads (`Answer`s, any
  status: the suite scans them all and judges refusals itself);
- the health suite's WebSocket token checks (`RawTokenSocket`, on the adapter);
- the load suite (`LoadSessions`, on the adapter, optional): `load_sessions(scenario)`
  hands the load engine a `pytest_apex.load.engine.SessionFactory`, a plain picklable value
  (worker processes get a copy) that opens its own fast client in the engine's loop. Its
  sessions time their steps by name: ``login`` (once per virtual user), ``create`` (once),
  ``list``, ``post`` and, for an agent, ``ws_connect`` (once), ``agent_first_event`` and
  ``agent_final_event``; the suite judges those names (`pytest_apex.suites.load_checks`).
  `pytest_apex.adapters.load` builds one from the description.

Errors surface as exceptions of any kind; the suites count them per user, with an example,
and go on with the other users. `pytest_apex.adapters.rest.RestAdapter` implements the REST
part from the description alone; `pytest_apex.adapters.apex.ApexAdapter` adds agent runs for
the reference stack. A team with more to do names its own factory in the description
(``adapter = "module:factory"``) or overrides the `apex_adapter` fixture.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from pytest_apex.adapters.load import LoadScenario
    from pytest_apex.load.engine import SessionFactory


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

    async def update(
        self, name: str, item_id: str, values: Mapping[str, str], *, resend: bool = False
    ) -> Any: ...

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


@dataclass(frozen=True)
class RunSignal:
    """What one frame says about a run, in the app's protocol (read by the adapter)."""

    run_id: str = ""
    request_key: str = ""  # the key `AgentStream.start_run`/`cancel_run` returned, if answered
    accepted: bool = False  # the frame accepts the request: `run_id` is now the run's id
    refused: bool = False  # the frame refuses the request (an error answer to it)
    terminal: str = ""  # "completed" | "failed" | "cancelled" when the frame ends the run


class AgentStream(Protocol):
    """One open socket of a user (`StreamingAgentSession.open_stream`)."""

    async def start_run(self, thread_id: str, user_request: str) -> str:
        """Ask for a run; returns the request's key (answered by an accepting frame)."""
        ...

    async def cancel_run(self, run_id: str) -> str:
        """Ask to cancel a run; returns the request's key."""
        ...

    async def chatter(self, count: int) -> None:
        """Send `count` harmless messages at once (what a rate limit counts)."""
        ...

    async def close(self, *, abrupt: bool = False) -> None:
        """Close the socket; `abrupt` drops the connection without a closing handshake."""
        ...

    async def wait_closed(self, timeout: float) -> bool:
        """Wait (at most `timeout` s) for the socket to end; whether it has."""
        ...

    @property
    def closed_reason(self) -> str:
        """Why the socket ended ("" while open): the close code and reason, or the error."""
        ...


FrameSink = Callable[[str], None]


@runtime_checkable
class StreamingAgentSession(UserSession, Protocol):
    """A user whose sockets are read for their whole life (streaming agent isolation)."""

    async def create_thread(self, title: str) -> dict[str, Any]: ...

    async def open_stream(self, on_frame: FrameSink) -> AgentStream: ...

    def run_signal(self, frame: Any) -> RunSignal | None: ...

    def failing_request(self, text: str) -> str | None: ...

    async def run_status(self, run_id: str) -> Any: ...

    async def list_thread_pages(self, page_size: int | None = None) -> list[Any]:
        """Every page of the user's thread list (`Answer`s), at `page_size` (None: default)."""
        ...

    async def read_thread(self, thread_id: str) -> list[Any]:
        """Every REST view of one thread (`Answer`s): the thread, its messages."""
        ...


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


@runtime_checkable
class LoadSessions(Protocol):
    """Optional adapter capability: the sessions the load suite's virtual users run.

    An adapter without it gets no load run (the suite fails saying so): load against routes
    nobody described would repeat the staging report's mistake of load-testing 401s.
    """

    def load_sessions(self, scenario: LoadScenario) -> SessionFactory:
        """A session factory for the load engine (see the module doc for its op names)."""
        ...
