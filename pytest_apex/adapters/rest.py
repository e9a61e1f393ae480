"""The zero-code REST adapter: acts as a user of any app its description explains.

A plain REST app needs no Python to be tested: the description says how users sign up and
log in, where the token is in the answer and which resources users own (routes, id and owner
fields, pagination, sub-resources). This adapter turns that into user actions.

Every action returns the answers it received, error answers included, so the isolation
suite can scan all of it for other users' data: data leaks on error paths too.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urljoin

import httpx

from pytest_apex.adapters.http import AiohttpClient, HttpClient, HttpxClient, StaleConnection
from pytest_apex.app.model import AppDescription, Pagination, Resource
from pytest_apex.jsonpath import dig

if TYPE_CHECKING:  # the load module builds on this one
    from pytest_apex.adapters.load import LoadScenario, RestLoadSessions

# Statuses that count as a refusal of another user's resource: not found (the usual way to
# hide existence), forbidden, unauthorised. A 5xx is not a refusal: it answered nothing.
REFUSAL_STATUSES: Final = frozenset({401, 403, 404})
# A collection is walked at most this many pages: a `next` link that loops must end.
MAX_PAGES: Final = 500


class AdapterError(RuntimeError):
    """An action the description promised did not work (sign-up or login refused, no token)."""


@dataclass(frozen=True)
class Answer:
    """One HTTP answer a user received: what was asked, the status, and the body."""

    method: str
    url: str
    status: int
    body: Any  # the parsed JSON, or None when the body is not JSON
    text: str  # the raw body, for scanning what JSON parsing would not show

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def refused(self) -> bool:
        return self.status in REFUSAL_STATUSES

    def describe(self) -> str:
        return f"{self.method} {self.url} answered {self.status}"


def _fill(template: Any, values: Mapping[str, str]) -> Any:
    """`template` with ``{name}`` placeholders in its strings replaced, recursively."""
    if isinstance(template, str):
        for name, value in values.items():
            template = template.replace("{" + name + "}", value)
        return template
    if isinstance(template, Mapping):
        return {k: _fill(v, values) for k, v in template.items()}
    if isinstance(template, list):
        return [_fill(v, values) for v in template]
    return template


def _token_subject(token: str) -> str:
    """The ``sub`` claim of a JWT, read without verifying it (the app verified it)."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return ""
    return str(claims.get("sub", "")) if isinstance(claims, dict) else ""


def resources_of(description: AppDescription) -> Iterator[Resource]:
    """Every resource, sub-resources after their parent."""
    for resource in description.resources:
        yield resource
        yield from resource.sub_resources


class RestAdapter:
    """Creates logged-in users of the described app over REST."""

    def __init__(
        self,
        description: AppDescription,
        endpoints: Mapping[str, str],
        *,
        http: HttpClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """`http` sends every request (aiohttp when not given); `transport`, instead, answers
        through an httpx transport (an in-process app in tests)."""
        if description.auth is None:
            raise AdapterError(
                f"the app description ({description.source or description.name}) has no "
                "[auth] section: the REST adapter cannot log users in"
            )
        self.description = description
        self.endpoints = {name: url.rstrip("/") for name, url in endpoints.items()}
        self.resources = {r.name: r for r in resources_of(description)}
        self.http: HttpClient = http or (
            HttpxClient(transport) if transport is not None else AiohttpClient()
        )
        self._signups = asyncio.Semaphore(description.users.signup_concurrency)
        self.retried = 0  # requests sent again after the server dropped their connection

    def url(self, service: str, path: str) -> str:
        try:
            return self.endpoints[service] + path
        except KeyError:
            raise AdapterError(
                f"the description routes to service {service!r}, but the target has no "
                f"endpoint for it (endpoints: {', '.join(sorted(self.endpoints)) or 'none'})"
            ) from None

    async def login(self, username: str) -> RestUserSession:
        """Sign `username` up (when the description says how) and log it in."""
        auth = self.description.auth
        assert auth is not None  # checked in __init__
        values = {"username": username, "email": username, "password": _password()}
        async with self._signups:
            if auth.signup is not None:
                answer = await self._send(
                    "POST",
                    self.url(auth.signup.service, auth.signup.path),
                    _fill(dict(auth.signup.body), values),
                    resend=True,
                )
                # 409: the account exists (a resent sign-up's first copy made it, say); the
                # login below, with this password, tells whether it is this user's.
                if not answer.ok and answer.status != 409:
                    raise AdapterError(
                        f"sign-up of {username}: {answer.describe()}: {answer.text[:200]}"
                    )
            answer = await self._send(
                "POST",
                self.url(auth.login.service, auth.login.path),
                _fill(dict(auth.login.body), values),
                resend=True,  # logging in again is harmless
            )
        if not answer.ok:
            raise AdapterError(f"login of {username}: {answer.describe()}: {answer.text[:200]}")
        token = dig(answer.body, auth.login.token_field)
        if not isinstance(token, str) or not token:
            keys = ", ".join(sorted(answer.body)) if isinstance(answer.body, dict) else "none"
            raise AdapterError(
                f"login of {username}: no token at {auth.login.token_field!r} in the answer "
                f"(its keys: {keys})"
            )
        user_id = (
            str(dig(answer.body, auth.login.user_id_field) or "")
            if auth.login.user_id_field
            else _token_subject(token)
        )
        if not user_id:
            where = auth.login.user_id_field or "the token's sub claim"
            raise AdapterError(f"login of {username}: no user id at {where!r}")
        return RestUserSession(self, user_id=user_id, username=username, token=token)

    async def _send(
        self,
        method: str,
        url: str,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        *,
        resend: bool = False,
    ) -> Answer:
        """One request. A GET whose connection the server dropped is sent once more; a write
        only when the caller says a second copy is harmless (`resend`: setting a test user
        up, where a duplicate item is still that user's own)."""
        try:
            reply = await self.http.request(method, url, json=body, headers=headers)
        except StaleConnection:
            if method != "GET" and not resend:
                raise  # a write may have reached the app: never sent twice
            # The server closed a pooled connection as it was reused; what a browser does,
            # once, on a fresh connection. An app that drops every request still fails.
            self.retried += 1
            reply = await self.http.request(method, url, json=body, headers=headers)
        text = reply.text
        try:
            parsed = json.loads(text) if text else None
        except ValueError:
            parsed = None
        return Answer(method, url, reply.status, parsed, text)

    def resource(self, name: str) -> Resource:
        try:
            return self.resources[name]
        except KeyError:
            raise AdapterError(
                f"no resource {name!r} in the app description "
                f"(resources: {', '.join(self.resources) or 'none'})"
            ) from None

    def load_sessions(self, scenario: LoadScenario) -> RestLoadSessions:
        """`LoadSessions`: log in, list every described resource, post under the first
        that has a sub-resource to create (`pytest_apex.adapters.load`)."""
        from pytest_apex.adapters.load import rest_load_sessions

        return rest_load_sessions(self.description, self.endpoints, scenario)

    async def aclose(self) -> None:
        await self.http.aclose()


def _password() -> str:
    # Strong enough for any password policy an app may have; never reused across users.
    return "Apx-" + secrets.token_urlsafe(18) + "9!"


class RestUserSession:
    """One logged-in user: resource actions with their token, each returning its answers."""

    def __init__(self, adapter: RestAdapter, *, user_id: str, username: str, token: str) -> None:
        self.adapter = adapter
        self.user_id = user_id
        self.username = username
        self.email = username
        self.token = token

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def close(self) -> None:
        """Nothing to release: the HTTP client is the adapter's."""

    async def request(
        self, method: str, url: str, body: Any = None, *, resend: bool = False
    ) -> Answer:
        return await self.adapter._send(method, url, body, self.headers, resend=resend)

    def _route(self, resource: Resource, template: str, **ids: str) -> str:
        path = template
        for name, value in ids.items():
            path = path.replace("{" + name + "}", value)
        return self.adapter.url(resource.service, path)

    async def create(
        self, name: str, values: Mapping[str, str], parent_id: str = "", *, resend: bool = False
    ) -> Answer:
        """Create one `name` resource from its description's body, filled with `values`
        (`resend`: once more if the server dropped the connection; see `RestAdapter._send`)."""
        resource = self.adapter.resource(name)
        url = self._route(resource, resource.collection, parent_id=parent_id)
        body = _fill(dict(resource.create), values)
        return await self.request("POST", url, body, resend=resend)

    async def read(self, name: str, item_id: str) -> Answer:
        resource = self.adapter.resource(name)
        if not resource.item:
            raise AdapterError(f"resource {name!r} has no item route in the description")
        return await self.request("GET", self._route(resource, resource.item, id=item_id))

    async def update(
        self, name: str, item_id: str, values: Mapping[str, str], *, resend: bool = False
    ) -> Answer:
        resource = self.adapter.resource(name)
        if not resource.item or not resource.update:
            raise AdapterError(f"resource {name!r} has no item route or update body")
        url = self._route(resource, resource.item, id=item_id)
        body = _fill(dict(resource.update), values)
        return await self.request(resource.update_method, url, body, resend=resend)

    async def list_all(
        self, name: str, parent_id: str = "", page_size: int | None = None
    ) -> tuple[list[Any], list[Answer]]:
        """Every item of a collection, walking every page; the items and each page's answer.

        Stops at an empty page, a page without a next link (when the app gives them), once
        the app's total is reached, or after `MAX_PAGES`; a failed page ends the walk and is
        the last answer returned.
        """
        resource = self.adapter.resource(name)
        base = self._route(resource, resource.collection, parent_id=parent_id)
        paging = resource.pagination
        items: list[Any] = []
        pages: list[Answer] = []
        url: str | None = _first_page(base, paging, page_size)
        while url is not None and len(pages) < MAX_PAGES:
            answer = await self.request("GET", url)
            pages.append(answer)
            if not answer.ok:
                break
            found = dig(answer.body, paging.items_field) if paging.items_field else answer.body
            found = found if isinstance(found, list) else []
            items.extend(found)
            url = _next_page(url, base, answer, paging, len(found), len(items), page_size)
        return items, pages


def _with_params(url: str, **params: str | int) -> str:
    request = httpx.URL(url)
    return str(request.copy_merge_params({k: str(v) for k, v in params.items()}))


def _first_page(base: str, paging: Pagination, page_size: int | None) -> str:
    size = {paging.size_param: page_size} if page_size else {}
    match paging.style:
        case "page":
            return _with_params(base, **{paging.page_param: 1}, **size)
        case "offset":
            return _with_params(base, **{paging.offset_param: 0}, **size)
        case _:
            return _with_params(base, **size) if size else base


def _next_page(
    url: str,
    base: str,
    answer: Answer,
    paging: Pagination,
    found: int,
    seen: int,
    page_size: int | None,
) -> str | None:
    if paging.style == "none" or found == 0:
        return None
    total = dig(answer.body, paging.total_field) if paging.total_field else None
    if isinstance(total, int) and seen >= total:
        return None
    following = dig(answer.body, paging.next_field) if paging.next_field else None
    if paging.next_field and not following:
        return None
    size = {paging.size_param: page_size} if page_size else {}
    match paging.style:
        case "page":
            current = int(httpx.URL(url).params.get(paging.page_param, "1"))
            return _with_params(base, **{paging.page_param: current + 1}, **size)
        case "offset":
            return _with_params(base, **{paging.offset_param: seen}, **size)
        case _:  # cursor: a next link (absolute or relative) or a bare cursor value
            if isinstance(following, str) and (following.startswith(("http://", "https://", "/"))):
                return urljoin(url, following)
            return _with_params(base, **{paging.cursor_param: str(following)}, **size)
