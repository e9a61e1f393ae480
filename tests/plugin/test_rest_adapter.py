"""The zero-code REST adapter against an in-memory app (httpx's MockTransport)."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from pytest_apex.adapters.http import StaleConnection
from pytest_apex.adapters.rest import AdapterError, RestAdapter
from pytest_apex.app import AppDescription, load_description

ENDPOINTS = {"api": "http://api.test", "identity": "http://identity.test"}


def _jwt(sub: str) -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    return f"{part({'alg': 'RS256'})}.{part({'sub': sub})}.c2ln"


def _description(pagination: dict[str, Any], **auth: Any) -> AppDescription:
    return load_description(
        {
            "name": "notes",
            "services": {"api": {"role": "api"}, "identity": {"role": "auth"}},
            "auth": {
                "signup": {
                    "service": "identity",
                    "path": "/v1/accounts",
                    "body": {"username": "{username}", "password": "{password}"},
                },
                "login": {
                    "service": "identity",
                    "path": "/v1/sessions",
                    "body": {"username": "{username}", "password": "{password}"},
                    "token_field": "jwt",
                },
                **auth,
            },
            "resources": {
                "notebooks": {
                    "service": "api",
                    "collection": "/v1/notebooks",
                    "item": "/v1/notebooks/{id}",
                    "owner_field": "owner",
                    "create": {"title": "{canary} notebook"},
                    "update": {"title": "{canary} renamed"},
                    "pagination": pagination,
                    "sub_resources": {
                        "notes": {
                            "collection": "/v1/notebooks/{parent_id}/notes",
                            "create": {"text": "{canary}"},
                        }
                    },
                }
            },
        },
        "test",
    )


class FakeNotes:
    """Accounts, sessions and notebooks in memory, paginated the way the test asks."""

    def __init__(self, page: Callable[[httpx.Request, list[dict[str, Any]]], dict[str, Any]]):
        self.passwords: dict[str, str] = {}
        self.notebooks: list[dict[str, Any]] = []
        self.page = page
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        body = json.loads(request.content) if request.content else {}
        if path == "/v1/accounts":
            self.passwords[body["username"]] = body["password"]
            return httpx.Response(201, json={"username": body["username"]})
        if path == "/v1/sessions":
            if self.passwords.get(body["username"]) != body["password"]:
                return httpx.Response(401, json={"error": "bad credentials"})
            return httpx.Response(200, json={"jwt": _jwt(f"id-{body['username']}")})
        owner = request.headers["authorization"].removeprefix("Bearer ").split(".")[1]
        if path == "/v1/notebooks" and request.method == "POST":
            item = {"id": str(uuid.uuid4()), "owner": owner, **body}
            self.notebooks.append(item)
            return httpx.Response(201, json=item)
        if path == "/v1/notebooks":
            mine = [n for n in self.notebooks if n["owner"] == owner]
            return httpx.Response(200, json=self.page(request, mine))
        if path.startswith("/v1/notebooks/") and path.endswith("/notes"):
            return httpx.Response(201, json={"id": "n1", "text": body["text"]})
        return httpx.Response(404, json={"error": f"no route {path}"})


def _by_page(request: httpx.Request, items: list[dict[str, Any]]) -> dict[str, Any]:
    page, size = int(request.url.params["page"]), int(request.url.params.get("per_page", "10"))
    chunk = items[(page - 1) * size : page * size]
    more = page * size < len(items)
    return {"items": chunk, "total": len(items), "next": f"?page={page + 1}" if more else None}


def _by_cursor(request: httpx.Request, items: list[dict[str, Any]]) -> dict[str, Any]:
    start = int(request.url.params.get("cursor", "0"))
    chunk = items[start : start + 7]
    following = start + 7
    return {
        "data": chunk,
        "next": f"/v1/notebooks?cursor={following}" if following < len(items) else "",
    }


async def _session(app: FakeNotes, description: AppDescription, name: str = "alice"):
    adapter = RestAdapter(description, ENDPOINTS, transport=httpx.MockTransport(app))
    return adapter, await adapter.login(name)


PAGE_STYLE = {"style": "page", "items_field": "items", "next_field": "next", "total_field": "total"}


async def test_signs_up_logs_in_and_takes_the_user_id_from_the_token() -> None:
    app = FakeNotes(_by_page)
    adapter, session = await _session(app, _description(PAGE_STYLE))
    assert session.user_id == "id-alice"
    assert session.headers["Authorization"].startswith("Bearer ")
    assert [r.url.path for r in app.requests] == ["/v1/accounts", "/v1/sessions"]
    await adapter.aclose()


@pytest.mark.parametrize("page_size", [None, 4, 50])
async def test_every_page_is_walked_once(page_size: int | None) -> None:
    app = FakeNotes(_by_page)
    adapter, session = await _session(app, _description(PAGE_STYLE))
    created = [
        (await session.create("notebooks", {"canary": f"c{i}"})).body["id"] for i in range(23)
    ]
    items, pages = await session.list_all("notebooks", page_size=page_size)
    assert sorted(i["id"] for i in items) == sorted(created)
    assert len(pages) == -(-23 // (page_size or 10))
    assert all(a.ok for a in pages)
    await adapter.aclose()


async def test_a_cursor_collection_follows_its_next_links() -> None:
    app = FakeNotes(_by_cursor)
    description = _description({"style": "cursor", "items_field": "data", "next_field": "next"})
    adapter, session = await _session(app, description)
    for i in range(20):
        await session.create("notebooks", {"canary": f"c{i}"})
    items, pages = await session.list_all("notebooks")
    assert len(items) == 20
    assert len({i["id"] for i in items}) == 20
    assert len(pages) == 3
    await adapter.aclose()


async def test_sub_resources_and_error_answers_come_back_for_scanning() -> None:
    app = FakeNotes(_by_page)
    adapter, session = await _session(app, _description(PAGE_STYLE))
    notebook = (await session.create("notebooks", {"canary": "mine"})).body
    note = await session.create("notes", {"canary": "text"}, parent_id=notebook["id"])
    assert note.status == 201
    assert app.requests[-1].url.path == f"/v1/notebooks/{notebook['id']}/notes"
    missing = await session.read("notebooks", "not-there")
    assert missing.refused
    assert "not-there" in missing.text  # error bodies are there to scan too
    await adapter.aclose()


async def test_a_login_without_the_described_token_field_says_where_it_looked() -> None:
    app = FakeNotes(_by_page)
    description = _description(
        PAGE_STYLE,
        login={
            "service": "identity",
            "path": "/v1/sessions",
            "body": {"username": "{username}", "password": "{password}"},
            "token_field": "access_token",
        },
    )
    adapter = RestAdapter(description, ENDPOINTS, transport=httpx.MockTransport(app))
    with pytest.raises(
        AdapterError, match=r"no token at 'access_token' in the answer \(its keys: jwt\)"
    ):
        await adapter.login("bob")
    await adapter.aclose()


async def test_a_route_to_a_service_the_target_lacks_names_it() -> None:
    app = FakeNotes(_by_page)
    adapter = RestAdapter(
        _description(PAGE_STYLE), {"api": "http://api.test"}, transport=httpx.MockTransport(app)
    )
    with pytest.raises(AdapterError, match=r"service 'identity'.*endpoints: api"):
        await adapter.login("carol")
    await adapter.aclose()


async def test_a_get_on_a_connection_the_server_dropped_is_sent_once_more_never_a_write() -> None:
    app = FakeNotes(_by_page)
    dropped: list[str] = []

    def flaky(request: httpx.Request) -> httpx.Response:
        # The first GET and the first POST of a notebook route find their connection gone.
        if request.url.path.startswith("/v1/notebooks") and request.method not in dropped:
            dropped.append(request.method)
            raise httpx.ReadError("connection reset by peer", request=request)
        return app(request)

    adapter = RestAdapter(_description(PAGE_STYLE), ENDPOINTS, transport=httpx.MockTransport(flaky))
    session = await adapter.login("dave")
    items, pages = await session.list_all("notebooks")  # dropped once, answered the second time
    assert (items, [p.status for p in pages]) == ([], [200])
    assert adapter.retried == 1
    with pytest.raises(StaleConnection):
        await session.create("notebooks", {"canary": "c"})  # a write is never sent twice
    assert dropped == ["GET", "POST"]
    await adapter.aclose()


async def test_setting_a_user_up_resends_a_dropped_create_and_sign_up() -> None:
    app = FakeNotes(_by_page)
    dropped: list[str] = []

    def flaky(request: httpx.Request) -> httpx.Response:
        # Each route's first request: the server resets the connection after the app acted.
        key = f"{request.method} {request.url.path}"
        if key not in dropped:
            dropped.append(key)
            app(request)  # it reached the app: the account or notebook exists
            raise httpx.ReadError("connection reset by peer", request=request)
        return app(request)

    adapter = RestAdapter(_description(PAGE_STYLE), ENDPOINTS, transport=httpx.MockTransport(flaky))
    session = await adapter.login("erin")  # the sign-up and the login, each sent twice
    created = await session.create("notebooks", {"canary": "c"}, resend=True)
    assert created.status == 201
    items, _pages = await session.list_all("notebooks")
    assert len(items) == 2  # the duplicate is the user's own
    assert adapter.retried == 4  # sign-up, login, create, list
    await adapter.aclose()
