"""A small multi-user REST app in memory, with ownership bugs to switch on, for httpx.

Notebooks owned by users, notes under notebooks, paginated lists, bearer tokens whose
payload is the user id. Each bug is one an engineer could ship: a read that forgets the
owner filter, a list that forgets it, an error message that quotes the wrong record, a
cache keyed by item id only (the second read of an id serves whoever cached it first).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any, Final

import httpx

BUGS: Final = ("idor", "list_leak", "error_leak", "shared_cache", "notes_leak")

DESCRIPTION: Final[dict[str, Any]] = {
    "name": "fake-notes",
    "services": {"api": {"role": "api"}},
    "auth": {
        "signup": {"service": "api", "path": "/accounts", "body": {"username": "{username}"}},
        "login": {
            "service": "api",
            "path": "/sessions",
            "body": {"username": "{username}"},
            "token_field": "token",
            "user_id_field": "user.id",
        },
    },
    "users": {"username": "user{index}-{run}", "domain": "unused"},
    "resources": {
        "notebooks": {
            "service": "api",
            "collection": "/notebooks",
            "item": "/notebooks/{id}",
            "owner_field": "owner",
            "create": {"title": "{canary}"},
            "update": {"title": "{canary}"},
            "pagination": {"style": "page", "items_field": "items", "next_field": "next"},
            "sub_resources": {
                "notes": {
                    "collection": "/notebooks/{parent_id}/notes",
                    "create": {"text": "{canary}"},
                    "pagination": {"style": "page", "items_field": "items", "next_field": "next"},
                }
            },
        }
    },
}


class FakeRestApp:
    """The app; call it with a request (an httpx MockTransport handler)."""

    def __init__(self, *bugs: str) -> None:
        unknown = set(bugs) - set(BUGS)
        assert not unknown, f"unknown bugs {unknown}"
        self.bugs = set(bugs)
        self.users: dict[str, str] = {}  # username -> id
        self.notebooks: dict[str, dict[str, Any]] = {}
        self.notes: dict[str, dict[str, Any]] = {}
        self.cache: dict[str, dict[str, Any]] = {}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else {}
        path = request.url.path.strip("/").split("/")
        if path == ["accounts"]:
            self.users.setdefault(body["username"], str(uuid.uuid4()))
            return httpx.Response(201, json={})
        if path == ["sessions"]:
            user_id = self.users[body["username"]]
            return httpx.Response(200, json={"token": f"t.{user_id}", "user": {"id": user_id}})
        caller = request.headers.get("authorization", "").removeprefix("Bearer t.")
        if caller not in self.users.values():
            return httpx.Response(401, json={"error": "unauthenticated"})
        return self._route(request.method, path, body, caller, request.url.params)

    def _route(
        self, method: str, path: list[str], body: dict[str, Any], caller: str, params: Any
    ) -> httpx.Response:
        if path == ["notebooks"] and method == "POST":
            return self._create(self.notebooks, {"title": body["title"]}, caller)
        if path == ["notebooks"]:
            mine = [
                n
                for n in self.notebooks.values()
                if n["owner"] == caller or "list_leak" in self.bugs
            ]
            return self._page(mine, params)
        if len(path) == 2 and path[0] == "notebooks":
            return self._notebook(method, path[1], body, caller)
        if len(path) == 3 and path[2] == "notes":
            notebook = self.notebooks.get(path[1])
            visible = notebook is not None and (
                notebook["owner"] == caller or "notes_leak" in self.bugs
            )
            if not visible:
                return httpx.Response(404, json={"error": "no such notebook"})
            if method == "POST":
                return self._create(self.notes, {"text": body["text"], "notebook": path[1]}, caller)
            return self._page([n for n in self.notes.values() if n["notebook"] == path[1]], params)
        return httpx.Response(404, json={"error": "no route"})

    def _notebook(
        self, method: str, item_id: str, body: dict[str, Any], caller: str
    ) -> httpx.Response:
        if "shared_cache" in self.bugs and method == "GET" and item_id in self.cache:
            return httpx.Response(200, json=self.cache[item_id])
        notebook = self.notebooks.get(item_id)
        if notebook is None or (notebook["owner"] != caller and "idor" not in self.bugs):
            if "error_leak" in self.bugs and self.notebooks:
                last = list(self.notebooks.values())[-1]
                return httpx.Response(
                    404, json={"error": f"not found (last seen: {last['title']})"}
                )
            return httpx.Response(404, json={"error": "no such notebook"})
        if method == "PATCH":
            notebook["title"] = body["title"]
        self.cache.setdefault(item_id, dict(notebook))
        return httpx.Response(200, json=notebook)

    @staticmethod
    def _create(
        store: dict[str, dict[str, Any]], fields: dict[str, Any], owner: str
    ) -> httpx.Response:
        item = {"id": str(uuid.uuid4()), "owner": owner, **fields}
        store[item["id"]] = item
        return httpx.Response(201, json=item)

    @staticmethod
    def _page(items: list[dict[str, Any]], params: Any) -> httpx.Response:
        page, size = int(params.get("page", "1")), int(params.get("per_page", "10"))
        chunk = items[(page - 1) * size : page * size]
        following = f"?page={page + 1}" if page * size < len(items) else None
        return httpx.Response(200, json={"items": chunk, "next": following})


def served(app: FakeRestApp, before: Callable[[httpx.Request], None] | None = None) -> Any:
    """`app` as an aiohttp application (for `fake_load.serving_in_a_thread`), so users in
    other processes reach it over HTTP; `before(request)` sees each request first."""
    from aiohttp import web

    async def handle(request: web.Request) -> web.Response:
        asked = httpx.Request(
            request.method,
            str(request.url),
            headers=dict(request.headers),
            content=await request.read(),
        )
        if before is not None:
            before(asked)
        answer = app(asked)
        return web.Response(
            status=answer.status_code, body=answer.content, content_type="application/json"
        )

    served_app = web.Application()
    served_app.router.add_route("*", "/{tail:.*}", handle)
    return served_app
