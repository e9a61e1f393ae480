"""The watchdog's program without Docker: its verdicts, and what it removes.

`watch` is served real loopback connections (the run's side is `watchdog.Guard`);
`remove_stack` is given a fake engine that records the API calls.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from pytest_apex.targets import watchdog_agent
from pytest_apex.targets.watchdog import Guard, WatchdogUnavailable

PROJECT = "apexrun-1-abcdef"


class Served:
    """`watch` running in a thread on a loopback port, with short grace periods."""

    def __init__(self, grace_s: float = 0.3, first_connect_s: float = 5.0) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.verdict = ""
        self.decided_at = 0.0
        self._thread = threading.Thread(
            target=self._serve, args=(grace_s, first_connect_s), daemon=True
        )
        self._thread.start()

    def _serve(self, grace_s: float, first_connect_s: float) -> None:
        self.verdict = watchdog_agent.watch(
            self.listener,
            PROJECT,
            grace_s=grace_s,
            patient_grace_s=30.0,
            first_connect_s=first_connect_s,
        )
        self.decided_at = time.monotonic()

    def guard(self) -> Guard:
        return Guard.connect("127.0.0.1", self.port, PROJECT)

    def result(self, timeout: float = 10.0) -> str:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the watchdog decided nothing"
        return self.verdict

    def undecided_after(self, seconds: float) -> bool:
        self._thread.join(seconds)
        return self._thread.is_alive()


@pytest.fixture
def served() -> Iterator[Served]:
    watched = Served()
    yield watched
    watched.listener.close()


def test_the_stack_is_removed_a_grace_period_after_the_last_connection_drops(
    served: Served,
) -> None:
    first, second = served.guard(), served.guard()
    first.close()
    assert served.undecided_after(0.8)  # another process of the run still holds on
    second.close()
    dropped = time.monotonic()
    assert served.result() == "remove"
    assert 0.25 <= served.decided_at - dropped < 3.0


def test_a_reconnect_within_the_grace_period_keeps_the_stack(served: Served) -> None:
    served.guard().close()
    again = served.guard()
    assert served.undecided_after(0.8)
    again.close()
    assert served.result() == "remove"


def test_keep_leaves_the_stack_to_the_user(served: Served) -> None:
    guard = served.guard()
    guard.tell("patient")
    guard.tell("keep")
    assert served.result() == "keep"
    guard.close()


def test_a_patient_run_gets_longer_than_the_grace_period(served: Served) -> None:
    guard = served.guard()
    guard.tell("patient")
    guard.close()
    assert served.undecided_after(1.0)  # a --apex-keep run's final word may still come
    Guard.connect("127.0.0.1", served.port, PROJECT).tell("keep")
    assert served.result() == "keep"


def test_release_removes_at_once(served: Served) -> None:
    guard = served.guard()
    guard.tell("release")
    assert served.result(timeout=2.0) == "remove"


def test_a_run_that_never_connects_loses_its_stack() -> None:
    watched = Served(first_connect_s=0.3)
    assert watched.result() == "remove"


def test_a_guard_refuses_a_watchdog_of_another_project(served: Served) -> None:
    with pytest.raises(WatchdogUnavailable, match=f"said: guarding {PROJECT}"):
        Guard.connect("127.0.0.1", served.port, "apexrun-2-ffffff", within=0.5)


class FakeApi(watchdog_agent.Engine):
    """The engine API as the watchdog uses it: what is listed, what is removed."""

    def __init__(self) -> None:
        super().__init__("/nonexistent.sock")
        self.containers = ["c1", "c2"]
        self.late = ["c3"]  # created by an orphaned `compose up` after the first look
        self.calls: list[tuple[str, str]] = []

    def _call(self, method: str, url: str) -> object:
        self.calls.append((method, url))
        if method == "DELETE":
            return None
        if url.startswith("/containers/json"):
            found, self.containers, self.late = self.containers, self.late, []
            return [{"Id": c} for c in found]
        if url.startswith("/networks"):
            return [{"Id": "net1"}]
        return {"Volumes": [{"Name": "vol1"}]}


def test_removal_touches_only_the_project_and_catches_late_containers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(watchdog_agent.time, "sleep", lambda _s: None)
    api = FakeApi()
    watchdog_agent.remove_stack(api, PROJECT, PROJECT, lambda _line: None)
    deleted = [url for method, url in api.calls if method == "DELETE"]
    assert deleted == [
        "/containers/c1?force=1&v=1",
        "/containers/c2?force=1&v=1",
        "/containers/c3?force=1&v=1",
        "/networks/net1",
        "/volumes/vol1",
    ]
    listed = [url for method, url in api.calls if method == "GET"]
    # Containers by project *and* run token; networks and volumes by the project.
    assert all("com.docker.compose.project%3D" + PROJECT in url for url in listed)
    assert all("io.pytest-apex.run" in url for url in listed if url.startswith("/containers"))
