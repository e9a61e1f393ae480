"""Two users on the clean stack: neither can read, list, change or extend the other's data,
and what they are told (404) is what they would hear for an id that does not exist."""

from __future__ import annotations

import httpx

from tests.notes.conftest import User, create_note, create_notebook, walk_pages
from tests.notes.markers import NOTES_STACK

pytestmark = NOTES_STACK


def test_another_users_notebook_is_404_and_never_listed(
    http: httpx.Client, api: str, new_user
) -> None:
    alice: User = new_user()
    bob: User = new_user()
    notebooks = [create_notebook(http, api, alice, f"alice {i}") for i in range(3)]
    note = create_note(http, api, alice, notebooks[0]["id"], "secret", "alice's secret")
    target = f"{api}/v1/notebooks/{notebooks[0]['id']}"
    refused = {
        "get": http.get(target, headers=bob.auth),
        "patch": http.patch(target, json={"title": "bob was here"}, headers=bob.auth),
        "delete": http.delete(target, headers=bob.auth),
        "list notes": http.get(f"{target}/notes", headers=bob.auth),
        "add note": http.post(f"{target}/notes", json={"title": "x"}, headers=bob.auth),
        "get note": http.get(f"{api}/v1/notes/{note['id']}", headers=bob.auth),
        "edit note": http.patch(
            f"{api}/v1/notes/{note['id']}", json={"body": "x"}, headers=bob.auth
        ),
        "delete note": http.delete(f"{api}/v1/notes/{note['id']}", headers=bob.auth),
    }
    assert {name: r.status_code for name, r in refused.items()} == dict.fromkeys(refused, 404)
    assert all("alice" not in r.text for r in refused.values())

    bobs_pages = walk_pages(http, f"{api}/v1/notebooks", bob)
    assert bobs_pages[0]["total"] == 0
    assert not [item for page in bobs_pages for item in page["items"]]
    # Alice's data survived Bob's attempts unchanged.
    assert http.get(target, headers=alice.auth).json()["title"] == "alice 0"
    assert http.get(f"{api}/v1/notes/{note['id']}", headers=alice.auth).json()["body"] == (
        "alice's secret"
    )
