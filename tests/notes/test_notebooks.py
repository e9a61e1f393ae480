"""Notebooks and notes of one user: CRUD, and pagination walked page by page."""

from __future__ import annotations

import uuid

import httpx

from tests.notes.conftest import User, create_note, create_notebook, walk_pages
from tests.notes.markers import NOTES_STACK

pytestmark = NOTES_STACK

NOTEBOOKS = 23
DEFAULT_PER_PAGE, MAX_PER_PAGE = 10, 50


def test_notebook_crud(http: httpx.Client, api: str, new_user) -> None:
    user: User = new_user()
    created = http.post(f"{api}/v1/notebooks", json={"title": "  Ideas "}, headers=user.auth)
    assert created.status_code == 201, created.text
    notebook = created.json()
    assert uuid.UUID(notebook["id"])
    assert (notebook["title"], notebook["owner"]) == ("Ideas", user.id)
    assert created.headers["location"] == f"/v1/notebooks/{notebook['id']}"
    url = f"{api}/v1/notebooks/{notebook['id']}"
    shown = http.get(url, headers=user.auth).json()
    assert {"id", "title", "owner", "created_at"} <= shown.keys()
    assert shown["created_at"] == notebook["created_at"]
    renamed = http.patch(url, json={"title": "Plans"}, headers=user.auth)
    assert renamed.status_code == 200
    assert http.get(url, headers=user.auth).json()["title"] == "Plans"
    assert http.delete(url, headers=user.auth).status_code == 204
    assert http.get(url, headers=user.auth).status_code == 404
    assert http.delete(url, headers=user.auth).status_code == 404


def test_invalid_input_is_refused(http: httpx.Client, api: str, new_user) -> None:
    user: User = new_user()
    notebooks = f"{api}/v1/notebooks"
    assert http.post(notebooks, json={"title": "   "}, headers=user.auth).status_code == 422
    assert http.post(notebooks, json={"title": 7}, headers=user.auth).status_code == 422
    assert http.post(notebooks, content=b"title=x", headers=user.auth).status_code == 400
    assert http.get(f"{notebooks}/not-a-uuid", headers=user.auth).status_code == 404
    assert http.get(f"{notebooks}?page=0", headers=user.auth).status_code == 400
    assert http.get(f"{notebooks}?per_page=ten", headers=user.auth).status_code == 400


def test_23_notebooks_walk_in_three_pages_without_duplicates(
    http: httpx.Client, api: str, new_user
) -> None:
    user: User = new_user()
    created = [
        create_notebook(http, api, user, f"notebook {i:02d}")["id"] for i in range(NOTEBOOKS)
    ]
    pages = walk_pages(http, f"{api}/v1/notebooks", user)
    assert [len(p["items"]) for p in pages] == [10, 10, 3]
    assert [p["page"] for p in pages] == [1, 2, 3]
    assert {(p["total"], p["per_page"]) for p in pages} == {(NOTEBOOKS, DEFAULT_PER_PAGE)}
    walked = [item["id"] for page in pages for item in page["items"]]
    assert walked == created  # every one, once, in creation order
    assert pages[-1]["next"] is None
    everything = http.get(f"{api}/v1/notebooks?per_page=500", headers=user.auth).json()
    assert (everything["per_page"], len(everything["items"])) == (MAX_PER_PAGE, NOTEBOOKS)
    past_the_end = http.get(f"{api}/v1/notebooks?page=9", headers=user.auth).json()
    assert (past_the_end["items"], past_the_end["total"], past_the_end["next"]) == ([], 23, None)


def test_notes_of_a_notebook(http: httpx.Client, api: str, new_user) -> None:
    user: User = new_user()
    notebook = create_notebook(http, api, user, "journal")
    notes = [
        create_note(http, api, user, notebook["id"], f"day {i}", f"entry {i}") for i in range(5)
    ]
    assert {(n["notebook"], n["owner"]) for n in notes} == {(notebook["id"], user.id)}
    pages = walk_pages(http, f"{api}/v1/notebooks/{notebook['id']}/notes?per_page=2", user)
    assert [len(p["items"]) for p in pages] == [2, 2, 1]
    assert [n["id"] for p in pages for n in p["items"]] == [n["id"] for n in notes]
    note_url = f"{api}/v1/notes/{notes[0]['id']}"
    assert http.get(note_url, headers=user.auth).json()["body"] == "entry 0"
    edited = http.patch(note_url, json={"body": "rewritten"}, headers=user.auth).json()
    assert (edited["title"], edited["body"]) == ("day 0", "rewritten")
    assert http.delete(note_url, headers=user.auth).status_code == 204
    assert http.get(note_url, headers=user.auth).status_code == 404
    http.delete(f"{api}/v1/notebooks/{notebook['id']}", headers=user.auth)
    assert http.get(f"{api}/v1/notes/{notes[1]['id']}", headers=user.auth).status_code == 404
