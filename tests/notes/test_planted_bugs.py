"""Each planted bug (NOTES_BUGS) makes a leak that a test can observe, and only its own.

The api is recreated with the switch on (compose waits for it to be healthy again); the
`api` fixture of the clean tests switches every bug off again when one of them runs later.
The clean behaviour of the same routes is proven in test_isolation.py; here each bug's leak
and the other route's still-closed door.
"""

from __future__ import annotations

import httpx

from tests.notes.conftest import User, create_note, create_notebook
from tests.notes.markers import NOTES_STACK
from tests.notes.stack import NotesStack

pytestmark = NOTES_STACK


def _alices_private_notebook(http: httpx.Client, api: str, alice: User) -> tuple[dict, dict]:
    notebook = create_notebook(http, api, alice, "alice's diary")
    note = create_note(http, api, alice, notebook["id"], "monday", "alice's secret")
    return notebook, note


def test_notebook_idor_lets_bob_read_alices_notebook(
    http: httpx.Client, notes_stack: NotesStack, new_user
):
    notes_stack.set_bugs("notebook_idor")
    api = notes_stack.url("api")
    alice, bob = new_user(), new_user()
    notebook, _ = _alices_private_notebook(http, api, alice)

    leaked = http.get(f"{api}/v1/notebooks/{notebook['id']}", headers=bob.auth)
    assert leaked.status_code == 200, leaked.text
    assert (leaked.json()["owner"], leaked.json()["title"]) == (alice.id, "alice's diary")
    # Only the single-notebook lookup lost its filter: the list and the notes stay closed.
    assert http.get(f"{api}/v1/notebooks", headers=bob.auth).json()["total"] == 0
    notes = http.get(f"{api}/v1/notebooks/{notebook['id']}/notes", headers=bob.auth)
    assert notes.status_code == 404


def test_notes_list_leak_lets_bob_list_alices_notes(
    http: httpx.Client, notes_stack: NotesStack, new_user
):
    notes_stack.set_bugs("notes_list_leak")
    api = notes_stack.url("api")
    alice, bob = new_user(), new_user()
    notebook, note = _alices_private_notebook(http, api, alice)

    leaked = http.get(f"{api}/v1/notebooks/{notebook['id']}/notes", headers=bob.auth)
    assert leaked.status_code == 200, leaked.text
    assert [(n["id"], n["body"]) for n in leaked.json()["items"]] == [
        (note["id"], "alice's secret")
    ]
    # The notebook itself, and the note by id, stay closed.
    assert http.get(f"{api}/v1/notebooks/{notebook['id']}", headers=bob.auth).status_code == 404
    assert http.get(f"{api}/v1/notes/{note['id']}", headers=bob.auth).status_code == 404
