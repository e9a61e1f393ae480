"""Fixtures of the Notes tests: the stack (brought up once per session), HTTP, users."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.notes.stack import NotesStack


@dataclass(frozen=True)
class User:
    id: str
    username: str
    password: str
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture(scope="session")
def notes_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NotesStack]:
    stack = NotesStack(tmp_path_factory.mktemp("notes") / "notes.env")
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="session")
def http() -> Iterator[httpx.Client]:
    # No keep-alive: gunicorn closes an idle connection after 2 s, and a test that waits on
    # a stopped service longer than that would reuse a connection the server has dropped.
    with httpx.Client(timeout=30.0, limits=httpx.Limits(max_keepalive_connections=0)) as client:
        yield client


@pytest.fixture
def api(notes_stack: NotesStack) -> str:
    """The clean api's base URL. Per test: a planted-bug test may have left the api with a
    bug on (it is switched off here, only when needed), and recreating it moves its port."""
    notes_stack.set_bugs()
    return notes_stack.url("api")


@pytest.fixture
def identity(notes_stack: NotesStack) -> str:
    return notes_stack.url("identity")


def sign_up(http: httpx.Client, identity: str) -> User:
    """A new account, signed in."""
    username, password = f"user_{secrets.token_hex(5)}", secrets.token_urlsafe(12)
    credentials = {"username": username, "password": password}
    account = http.post(f"{identity}/v1/accounts", json=credentials)
    assert account.status_code == 201, account.text
    session = http.post(f"{identity}/v1/sessions", json=credentials)
    assert session.status_code == 201, session.text
    return User(account.json()["id"], username, password, session.json()["jwt"])


@pytest.fixture
def new_user(http: httpx.Client, identity: str) -> Callable[[], User]:
    return lambda: sign_up(http, identity)


def create_notebook(http: httpx.Client, api: str, user: User, title: str) -> dict:
    response = http.post(f"{api}/v1/notebooks", json={"title": title}, headers=user.auth)
    assert response.status_code == 201, response.text
    return response.json()


def create_note(
    http: httpx.Client, api: str, user: User, notebook_id: str, title: str, body: str = ""
) -> dict:
    response = http.post(
        f"{api}/v1/notebooks/{notebook_id}/notes",
        json={"title": title, "body": body},
        headers=user.auth,
    )
    assert response.status_code == 201, response.text
    return response.json()


def walk_pages(http: httpx.Client, url: str, user: User) -> list[dict]:
    """Every page of a paginated list, following `next` from `url` until it is null."""
    pages = []
    next_url: str | None = url
    while next_url is not None:
        response = http.get(next_url, headers=user.auth)
        assert response.status_code == 200, response.text
        pages.append(response.json())
        next_url = pages[-1]["next"]
        assert len(pages) <= 100, "pagination does not end"
    return pages
