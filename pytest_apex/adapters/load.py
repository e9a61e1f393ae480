"""The sessions the load suite's virtual users run, built from the app description.

A virtual user logs in once (its first session, timed as ``login``; sign-up included when
the description has one), creates the one parent item it posts under (``create``, once),
then in every session lists each described top-level resource (``list``), posts one
sub-resource item when the description says how (``post``) and, for an app whose adapter
adds it, runs the agent (`RestLoadSessions.agent`). Between sessions it thinks.

The factory is a plain picklable value until `open()` (worker processes get a copy), and it
sends through the load engine's aiohttp client, not the adapter's: the engine's hot path
must not share a pool (or an event loop) with the suites' other requests.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp

from pytest_apex.adapters.rest import (
    AdapterError,
    _fill,
    _first_page,
    _token_subject,
)
from pytest_apex.app.model import AppDescription
from pytest_apex.jsonpath import dig
from pytest_apex.load.engine import OperationFailed, Ops
from pytest_apex.load.http import probe_http
from pytest_apex.load.measure import CONNECTION, PROTOCOL, status_kind

# What a load user's items are called: findable, and not mistaken for an isolation canary.
ITEM_TEXT: Final = "apexload-{user}"


@dataclass(frozen=True)
class Call:
    """One described request: method, absolute URL (a template) and JSON body (a template)."""

    method: str
    url: str
    body: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        # Plain dicts: the description's read-only mappings cannot travel to a worker.
        if self.body is not None:
            object.__setattr__(self, "body", _plain(self.body))


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


@dataclass(frozen=True)
class PostStep:
    """Create a parent item once per user, then post one child item under it per session."""

    parent: Call
    parent_id_field: str
    child: Call  # its URL holds ``{parent_id}``


@dataclass(frozen=True)
class LoadScenario:
    """How a virtual user behaves, whatever the app: the suite's settings in plain values."""

    think_s: float = 1.0
    timeout_s: float = 30.0
    run: str = "load"  # part of every user name, so two runs never share users
    agent_timeout_s: float = 60.0


@dataclass
class UserState:
    """What a virtual user keeps between its sessions (in the worker that runs it)."""

    token: str
    user_id: str
    headers: dict[str, str]
    parent_id: str = ""
    socket: Any = None  # an agent adapter's open WebSocket, reused by every session


@dataclass
class RestLoadSessions:
    """`pytest_apex.load.engine.SessionFactory` over the described REST routes."""

    probe_url: str
    login: Call
    token_field: str
    user_id_field: str
    username: str  # the description's template, with {run} and {domain} already filled
    signup: Call | None = None
    lists: tuple[str, ...] = ()
    post: PostStep | None = None
    scenario: LoadScenario = field(default_factory=LoadScenario)
    limit: int = 1000  # sockets per worker process
    # A user's password is the same at every attempt: a sign-up that worked before a login
    # that failed answers 409 next time, and only the first password would then log in.
    password_seed: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    keepalive_s: float = 1.0  # see pytest_apex.load.http.HttpSessionFactory.keepalive_s
    _client: Any = field(default=None, init=False, repr=False, compare=False)
    _users: dict[int, UserState] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    # --- SessionFactory ----------------------------------------------------------------------

    async def open(self) -> None:
        self._client = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=self.limit, limit_per_host=0, keepalive_timeout=self.keepalive_s
            ),
            # Every user carries its own token: a shared jar would hand cookies between them.
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=self.scenario.timeout_s),
        )
        self._users = {}

    async def close(self) -> None:
        await asyncio.gather(
            *(self.close_user(state) for state in self._users.values()), return_exceptions=True
        )
        self._users = {}
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def probe(self, timeout_s: float) -> None:
        assert self._client is not None
        await probe_http(self._client, self.probe_url, timeout_s)

    def session(self, user: int) -> _LoadSession:
        return _LoadSession(self, user)

    # --- what a session does -----------------------------------------------------------------

    async def send(self, call: Call, headers: Mapping[str, str] | None = None) -> Any:
        """One request; its JSON answer (None when not JSON). A 4xx/5xx is an error."""
        kwargs: dict[str, Any] = {}
        if call.body is not None:
            kwargs["data"] = json.dumps(call.body)
            kwargs["headers"] = {"Content-Type": "application/json", **(headers or {})}
        elif headers:
            kwargs["headers"] = dict(headers)
        try:
            async with self._client.request(call.method, call.url, **kwargs) as response:
                content = await response.read()
                status = response.status
        except (aiohttp.ClientPayloadError, aiohttp.ClientResponseError) as exc:
            raise OperationFailed(PROTOCOL, f"{type(exc).__name__}: {exc}") from exc
        except aiohttp.ServerDisconnectedError as exc:
            raise OperationFailed(CONNECTION, f"{type(exc).__name__}: {exc}") from exc
        if status >= 400:
            raise OperationFailed(status_kind(status), f"HTTP {status} from {call.url}")
        try:
            return json.loads(content) if content else None
        except ValueError:
            return None

    async def log_in(self, user: int) -> UserState:
        name = self.username.replace("{index}", str(user))
        password = f"Apx-{self.password_seed}-{user}9!"  # any password policy: long, mixed
        values = {"username": name, "email": name, "password": password}
        if self.signup is not None:
            try:
                await self.send(_filled(self.signup, values))
            except OperationFailed as exc:
                if exc.kind != "4xx" or "HTTP 409" not in exc.detail:
                    raise  # 409: the account exists already, and the login says whose
        answer = await self.send(_filled(self.login, values))
        token = dig(answer, self.token_field)
        if not isinstance(token, str) or not token:
            raise OperationFailed(PROTOCOL, f"no token at {self.token_field!r} in the login answer")
        user_id = (
            str(dig(answer, self.user_id_field) or "")
            if self.user_id_field
            else _token_subject(token)
        )
        return UserState(token, user_id, {"Authorization": f"Bearer {token}"})

    async def create_parent(self, state: UserState, user: int) -> str:
        assert self.post is not None
        values = {"canary": ITEM_TEXT.format(user=user)}
        answer = await self.send(_filled(self.post.parent, values), state.headers)
        found = dig(answer, self.post.parent_id_field)
        if found is None or found == "":
            raise OperationFailed(
                PROTOCOL, f"no id at {self.post.parent_id_field!r} in the created item"
            )
        return str(found)

    async def post_child(self, state: UserState, user: int) -> None:
        assert self.post is not None
        values = {"canary": ITEM_TEXT.format(user=user), "parent_id": state.parent_id}
        await self.send(_filled(self.post.child, values), state.headers)

    async def agent(self, ops: Ops, state: UserState, user: int) -> None:
        """An agent run per session: none here; an agent adapter's factory adds it."""

    async def close_user(self, state: UserState) -> None:
        """Release what a user holds (an agent adapter's socket)."""


def _filled(call: Call, values: Mapping[str, str]) -> Call:
    body = None if call.body is None else _fill(dict(call.body), values)
    return Call(call.method, _fill(call.url, values), body)


class _LoadSession:
    __slots__ = ("_factory", "_user")

    def __init__(self, factory: RestLoadSessions, user: int) -> None:
        self._factory = factory
        self._user = user

    async def run(self, ops: Ops) -> None:
        factory, user = self._factory, self._user
        state = factory._users.get(user)
        if state is None:
            # Once per virtual user; a failed login is counted and tried again next session.
            state = await ops.timed("login", factory.log_in(user))
            factory._users[user] = state
        if factory.post is not None and not state.parent_id:
            state.parent_id = await ops.timed("create", factory.create_parent(state, user))
        for url in factory.lists:
            await ops.timed("list", factory.send(Call("GET", url), state.headers))
        if factory.post is not None:
            await ops.timed("post", factory.post_child(state, user))
        await factory.agent(ops, state, user)
        if factory.scenario.think_s:
            await ops.think(factory.scenario.think_s)


def rest_load_sessions(
    description: AppDescription,
    endpoints: Mapping[str, str],
    scenario: LoadScenario,
    factory: type[RestLoadSessions] = RestLoadSessions,
    **extra: Any,
) -> RestLoadSessions:
    """The load sessions the description implies (see the module doc); `factory` and
    `extra` let an agent adapter build its subclass from the same description."""
    auth = description.auth
    if auth is None:
        raise AdapterError(
            f"the app description of {description.name} has no [auth] section: load users "
            "cannot log in"
        )
    urls = {name: url.rstrip("/") for name, url in endpoints.items()}

    def url(service: str, path: str) -> str:
        if service not in urls:
            raise AdapterError(
                f"the description routes to service {service!r}, but the target has no "
                f"endpoint for it (endpoints: {', '.join(sorted(urls)) or 'none'})"
            )
        return urls[service] + path

    top = description.resources
    lists = tuple(
        _first_page(url(r.service, r.collection), r.pagination, None)
        for r in top
        if "{" not in r.collection  # a collection under another item is not a user's list
    )
    post = None
    for resource in top:
        children = [c for c in resource.sub_resources if c.create]
        if resource.create and children:
            child = children[0]
            post = PostStep(
                parent=Call("POST", url(resource.service, resource.collection), resource.create),
                parent_id_field=resource.id_field,
                child=Call("POST", url(child.service, child.collection), child.create),
            )
            break
    login_url = url(auth.login.service, auth.login.path)
    username = description.users.username.replace("{run}", scenario.run).replace(
        "{domain}", description.users.domain
    )
    signup = (
        Call("POST", url(auth.signup.service, auth.signup.path), auth.signup.body)
        if auth.signup is not None
        else None
    )
    first_list = lists[0] if lists else login_url
    return factory(
        probe_url=first_list,
        login=Call("POST", login_url, auth.login.body),
        token_field=auth.login.token_field,
        user_id_field=auth.login.user_id_field,
        username=username,
        signup=signup,
        lists=lists,
        post=post,
        scenario=scenario,
        **extra,
    )
