"""The backend's two releases, v1 and v2, on the schema revisions of the rollback drill.

Release v2 writes `threads.summary` (0002_expand_thread_summary); v1 never names it. These
tests change the schema and the backend's release, so they run on a stack of their own
(`release_stack`, module-scoped, torn down at the end), never on the shared fault stack.
They move it with the drill's own commands: upgrading is recreating `migrate` and
`backend` with APEX_DB_REVISION and APEX_BACKEND_RELEASE, rolling back is recreating
`backend` alone. The migrate job never downgrades, so a test that needs an older schema
than the stack has gets it from `ReleaseStack.downgrade` (Alembic from the host), which
only the harness does: the tests are in schema order, so a whole run needs none.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest
from alembic import command
from sqlalchemy.engine import URL

from pytest_apex.reference import FAULTS_ENV, PORT_SCHEMES
from pytest_apex.targets.compose import ComposeTarget
from pytest_apex.targets.errors import StackStartError
from pytest_apex.targets.lifecycle import new_project_name
from tests.conftest import COMPOSE_FILE, ENV_FILE, STACK_DIR, FaultStack
from tests.stack.conftest import User, login, wait_until

sys.path.insert(0, str(STACK_DIR / "services"))  # the services' packages, as in their image
from apex_migrations import (
    BASELINE,
    CONTRACT_THREAD_SUMMARY,
    EXPAND_THREAD_SUMMARY,
    REVISIONS,
    alembic_config,
)

RELEASE_VARIABLE = "APEX_BACKEND_RELEASE"
REVISION_VARIABLE = "APEX_DB_REVISION"
SUMMARY_CHARS = 120  # apex_backend.thread_store.SUMMARY_CHARS
# A recreated backend answers within a few seconds; this only bounds a broken one.
DEADLINE_S = 30.0
V2_REFUSAL = (
    f"release v2 needs schema revision {EXPAND_THREAD_SUMMARY} (threads.summary); the "
    f"database lacks it: run the migrate job with APEX_DB_REVISION={EXPAND_THREAD_SUMMARY} first"
)


class ReleaseStack(FaultStack):
    """A reference stack whose tests deploy backend releases and schema revisions."""

    def __init__(self, target: ComposeTarget) -> None:
        super().__init__(target)
        self.release = "v1"  # the compose file's defaults, which the stack came up with
        self.timings: list[tuple[str, float]] = []  # (what changed, seconds), printed at the end

    def recreate(self, services: list[str], release: str, revision: str | None = None) -> None:
        """`ComposeTarget.recreate` of `services` with these compose variables, timed."""
        env = {RELEASE_VARIABLE: release}
        if revision is not None:
            env[REVISION_VARIABLE] = revision
        before = f"{self.release}@{self.revision()}"
        self.release = f"{release} (not started)"  # until recreate returns
        started = time.monotonic()
        try:
            self.target.recreate(services, env)
        finally:
            took = time.monotonic() - started
            self.timings.append((f"{before} -> {release}@{revision or '='} {services}", took))
        self.release = release

    def revision(self) -> str:
        return self.sql("SELECT version_num FROM alembic_version")

    def deploy(self, release: str, revision: str) -> dict[str, str]:
        """The backend `release` on schema `revision`, by the drill's own commands; the
        stack's endpoints once the backend answers as that release."""
        current = self.revision()
        if REVISIONS.index(revision) < REVISIONS.index(current):
            self.downgrade(revision)
        if revision != current:
            # As the upgrade: `up --wait --no-deps` still starts the backend only once the
            # job exited 0 (its depends_on), so a v2 backend meets its column.
            self.recreate(["migrate", "backend"], release, revision)
        elif release != self.release:
            self.recreate(["backend"], release)  # as the rollback
        assert self.revision() == revision
        backend = self.endpoints()["backend"]
        wait_until(lambda: live(backend).get("release") == release, f"{release} answers")
        return self.endpoints()

    def downgrade(self, revision: str) -> None:
        """The harness's way back to an older schema (the migrate job has none)."""
        env = self.target.environment("postgres")
        address = httpx.URL(self.endpoints()["postgres"])
        url = URL.create(
            "postgresql+psycopg",
            username=env["POSTGRES_USER"],
            password=env["POSTGRES_PASSWORD"],
            host=address.host,
            port=address.port,
            database=env["POSTGRES_DB"],
        )
        command.downgrade(alembic_config(url), revision)

    def backend_container(self) -> dict[str, Any]:
        (backend,) = [c for c in self.target.containers() if c.service == "backend"]
        return {"state": backend.state, "exit_code": backend.exit_code, "image": backend.image_id}


def live(backend: str) -> dict[str, Any]:
    try:
        response = httpx.get(f"{backend}/health/live", timeout=5.0)
    except httpx.TransportError:
        return {}  # not listening yet
    return response.json() if response.status_code == 200 else {}


@pytest.fixture(scope="module")
def release_stack() -> Iterator[ReleaseStack]:
    target = ComposeTarget(
        COMPOSE_FILE,
        new_project_name(),
        env={FAULTS_ENV: ""},
        progress=lambda line: print(f"[release-stack] {line}", flush=True),
        port_schemes=PORT_SCHEMES,
    )
    try:
        started = time.monotonic()
        target.start()
        stack = ReleaseStack(target)
        stack.timings.append(("bring-up", time.monotonic() - started))
        yield stack
        print(flush=True)  # off the line of pytest's progress dots
        for what, seconds in stack.timings:
            print(f"[release-stack] {seconds:5.1f} s  {what}", flush=True)
    finally:
        target.stop()


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30.0) as http:
        yield http


def _user(client: httpx.Client, endpoints: dict[str, str]) -> User:
    return login(client, endpoints["auth"])


def _create(client: httpx.Client, backend: str, user: User, title: str) -> dict[str, Any]:
    response = client.post(f"{backend}/api/threads", json={"title": title}, headers=user.auth)
    assert response.status_code == 201, response.text
    return response.json()


def _post(client: httpx.Client, backend: str, user: User, thread_id: str, content: str) -> dict:
    response = client.post(
        f"{backend}/api/threads/{thread_id}/messages", json={"content": content}, headers=user.auth
    )
    assert response.status_code == 201, response.text
    return response.json()


def _get(client: httpx.Client, url: str, user: User) -> Any:
    response = client.get(url, headers=user.auth)
    assert response.status_code == 200, response.text
    return response.json()


def _listed(client: httpx.Client, backend: str, user: User) -> dict[str, dict[str, Any]]:
    return {t["id"]: t for t in _get(client, f"{backend}/api/threads", user)}


def _v1_columns_digest(stack: ReleaseStack, threads: list[str], messages: list[str]) -> str:
    """md5 of these rows in the columns v1 reads and writes (a thread's all but summary, a
    message's all), in a fixed order: what v2 must leave as it found it."""

    def ids(values: list[str]) -> str:
        return "ARRAY[" + ",".join(f"'{v}'" for v in values) + "]::uuid[]"

    return stack.sql(
        "SELECT md5((SELECT string_agg(concat_ws('|', id, user_id, title, created_at), ','"
        f" ORDER BY id) FROM threads WHERE id = ANY({ids(threads)}))"
        " || '#' || (SELECT string_agg(concat_ws('|', id, thread_id, user_id, role, content,"
        f" run_id, created_at), ',' ORDER BY id) FROM messages WHERE id = ANY({ids(messages)})))"
    )


def _without_summary(thread: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in thread.items() if k != "summary"}


# --- in schema order: 0001, then 0002, then the contract step 0003 -------------------------


def test_v2_refuses_to_start_on_the_baseline_schema_saying_what_to_run(release_stack) -> None:
    release_stack.deploy("v1", BASELINE)
    with pytest.raises(StackStartError):
        release_stack.recreate(["backend"], "v2")
    backend = release_stack.backend_container()
    assert backend["state"] == "exited", backend
    assert backend["exit_code"] != 0, backend
    assert V2_REFUSAL in release_stack.target.logs("backend")
    assert release_stack.revision() == BASELINE  # it only refused: nothing was migrated
    release_stack.deploy("v1", BASELINE)  # and v1 comes back on the same schema


def test_an_unknown_release_is_refused_at_start(release_stack) -> None:
    image = release_stack.backend_container()["image"]
    backend = [image, "/opt/venv/bin/uvicorn", "apex_backend.app:app"]
    started = subprocess.run(
        ["docker", "run", "--rm", "--env-file", str(ENV_FILE), "-e", "APEX_RELEASE=v3", *backend],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert started.returncode != 0
    assert "APEX_RELEASE must be one of v1, v2, got 'v3'" in started.stderr, started.stderr


def _docker_time(stamp: str) -> datetime:
    """Docker's RFC 3339 UTC time (nanoseconds, trailing zeros cut) to microseconds."""
    whole, _, fraction = stamp.rstrip("Z").partition(".")
    return datetime.fromisoformat(f"{whole}.{(fraction or '0')[:6]:0<6}+00:00")


def _container_times(stack: ReleaseStack, service: str) -> tuple[datetime, datetime]:
    """(started, finished) of the service's container."""
    (container,) = [c for c in stack.target.containers() if c.service == service]
    state = "{{.State.StartedAt}} {{.State.FinishedAt}}"
    inspected = subprocess.run(
        ["docker", "inspect", "--format", state, container.container_id],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split()
    return _docker_time(inspected[0]), _docker_time(inspected[1])


def test_the_upgrade_and_the_rollback_are_one_recreate_each(release_stack, client) -> None:
    """The drill's commands, exactly: v1 on 0001 -> v2 on 0002 -> v1 on 0002."""
    backend = release_stack.deploy("v1", BASELINE)["backend"]
    assert live(backend)["release"] == "v1"

    release_stack.recreate(["migrate", "backend"], "v2", EXPAND_THREAD_SUMMARY)  # the upgrade
    assert release_stack.revision() == EXPAND_THREAD_SUMMARY
    backend = release_stack.endpoints()["backend"]
    assert live(backend)["release"] == "v2"  # `up --wait` returned with v2 healthy
    assert client.get(f"{backend}/health/config").json()["release"] == "v2"
    _, migrated_at = _container_times(release_stack, "migrate")
    backend_started_at, _ = _container_times(release_stack, "backend")
    assert migrated_at < backend_started_at  # the job was done before v2 began

    release_stack.recreate(["backend"], "v1")  # the rollback: the schema stays expanded
    assert release_stack.revision() == EXPAND_THREAD_SUMMARY
    backend = release_stack.endpoints()["backend"]
    assert live(backend)["release"] == "v1"
    config = client.get(f"{backend}/health/config").json()
    assert config["release"] == "v1"
    assert {"service", "instance", "version"} <= set(config)


def test_v1_on_the_expanded_schema_creates_lists_and_reads_threads_and_messages(
    release_stack, client
) -> None:
    endpoints = release_stack.deploy("v1", EXPAND_THREAD_SUMMARY)
    backend, user = endpoints["backend"], _user(client, endpoints)
    thread = _create(client, backend, user, "written by v1")
    assert set(thread) == {"id", "user_id", "title", "created_at"}
    message = _post(client, backend, user, thread["id"], "hello from v1")
    assert _get(client, f"{backend}/api/threads/{thread['id']}", user) == thread
    listed = _listed(client, backend, user)[thread["id"]]
    assert listed == {**thread, "last_message_preview": "hello from v1"}
    assert _get(client, f"{backend}/api/threads/{thread['id']}/messages", user) == [message]
    # v1 left the column it does not know alone.
    assert release_stack.sql(f"SELECT summary IS NULL FROM threads WHERE id = '{thread['id']}'")


def test_v2_writes_the_summary_on_creation_and_after_a_message(release_stack, client) -> None:
    endpoints = release_stack.deploy("v2", EXPAND_THREAD_SUMMARY)
    backend, user = endpoints["backend"], _user(client, endpoints)
    thread = _create(client, backend, user, "written by v2")
    assert thread["summary"] == "written by v2"
    assert _listed(client, backend, user)[thread["id"]]["summary"] == "written by v2"

    content = "a long message " + "x" * 200
    _post(client, backend, user, thread["id"], content)
    summary = content[:SUMMARY_CHARS]
    assert _get(client, f"{backend}/api/threads/{thread['id']}", user)["summary"] == summary
    # The listing was cached before the message: posting one invalidates it under v2.
    assert _listed(client, backend, user)[thread["id"]]["summary"] == summary
    stored = release_stack.sql(f"SELECT summary FROM threads WHERE id = '{thread['id']}'")
    assert stored == summary


def test_v1_after_v2_reads_v2s_threads_unchanged_in_v1s_columns(release_stack, client) -> None:
    endpoints = release_stack.deploy("v1", EXPAND_THREAD_SUMMARY)
    backend, user = endpoints["backend"], _user(client, endpoints)
    older = _create(client, backend, user, "v1's, before the upgrade")
    older_message = _post(client, backend, user, older["id"], "v1's message")
    v1_rows = ([older["id"]], [older_message["id"]])
    written_by_v1 = _v1_columns_digest(release_stack, *v1_rows)

    backend = release_stack.deploy("v2", EXPAND_THREAD_SUMMARY)["backend"]
    assert _get(client, f"{backend}/api/threads/{older['id']}", user)["summary"] is None
    # v2 summarises v1's thread, and writes threads and messages of its own ...
    message = _post(client, backend, user, older["id"], "v2's message on v1's thread")
    newer = _create(client, backend, user, "v2's")
    newer_message = _post(client, backend, user, newer["id"], "v2's message")
    summarised = _get(client, f"{backend}/api/threads/{older['id']}", user)
    assert summarised["summary"] == "v2's message on v1's thread"
    # ... and changes nothing of v1's rows in v1's columns.
    assert _v1_columns_digest(release_stack, *v1_rows) == written_by_v1
    every_row = (
        [older["id"], newer["id"]],
        [older_message["id"], message["id"], newer_message["id"]],
    )
    written_by_v2 = _v1_columns_digest(release_stack, *every_row)
    seen_by_v2 = {
        thread_id: (
            _get(client, f"{backend}/api/threads/{thread_id}", user),
            _get(client, f"{backend}/api/threads/{thread_id}/messages", user),
        )
        for thread_id in every_row[0]
    }

    backend = release_stack.deploy("v1", EXPAND_THREAD_SUMMARY)["backend"]  # the rollback
    assert _v1_columns_digest(release_stack, *every_row) == written_by_v2
    for thread_id, (thread, messages) in seen_by_v2.items():
        assert _get(client, f"{backend}/api/threads/{thread_id}", user) == _without_summary(thread)
        assert _get(client, f"{backend}/api/threads/{thread_id}/messages", user) == messages
    listed = _listed(client, backend, user)
    assert set(listed) == set(seen_by_v2)
    assert all("summary" not in thread for thread in listed.values())
    # v1 goes on writing on v2's threads and its own.
    _post(client, backend, user, newer["id"], "v1 writes on after the rollback")
    _create(client, backend, user, "v1's, after the rollback")


def test_after_the_contract_step_v1_can_no_longer_create_threads(release_stack, client) -> None:
    """Why the drill refuses contract steps while v1 may still be rolled back to."""
    endpoints = release_stack.deploy("v1", CONTRACT_THREAD_SUMMARY)
    backend, user = endpoints["backend"], _user(client, endpoints)
    refused = client.post(f"{backend}/api/threads", json={"title": "t"}, headers=user.auth)
    assert refused.status_code == 500, refused.text
    wait_until(
        lambda: 'null value in column "summary"' in release_stack.target.logs("backend"),
        "the backend logged the not-null violation",
    )
    assert _get(client, f"{backend}/api/threads", user) == []  # reading still works
    # v2, which writes the summary, is the release that runs on the contracted schema.
    backend = release_stack.deploy("v2", CONTRACT_THREAD_SUMMARY)["backend"]
    assert _create(client, backend, user, "v2's, contracted")["summary"] == "v2's, contracted"
