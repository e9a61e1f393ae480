"""Fixtures for the reference stack's own tests: logged-in users over plain HTTP."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families


@dataclass
class User:
    id: str
    email: str
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture(scope="session")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30.0) as client:
        yield client


def login(http: httpx.Client, auth_url: str, email: str | None = None) -> User:
    email = email or f"stack-{uuid.uuid4().hex[:10]}@apex.test"
    response = http.post(f"{auth_url}/auth/dev/login", json={"email": email})
    assert response.status_code == 200, response.text
    body = response.json()
    return User(body["user"]["id"], body["user"]["email"], body["access_token"])


@pytest.fixture
def new_user(http: httpx.Client, apex_endpoints: dict[str, str]):
    return lambda: login(http, apex_endpoints["auth"])


def metric_families(http: httpx.Client, backend_url: str) -> dict:
    """The backend's /metrics, parsed: family name (counters without `_total`) -> family."""
    response = http.get(f"{backend_url}/metrics")
    assert response.status_code == 200, response.text
    return {f.name: f for f in text_string_to_metric_families(response.text)}


def isolation_violations(http: httpx.Client, backend_url: str) -> dict[str, float]:
    """apex_isolation_violations_total of the backend process, by kind."""
    family = metric_families(http, backend_url)["apex_isolation_violations"]
    return {s.labels["kind"]: s.value for s in family.samples if s.name.endswith("_total")}


def wait_until(condition: Callable[[], bool], what: str, deadline_s: float = 30.0) -> None:
    """Polls `condition` until it holds; fails naming `what` after `deadline_s`."""
    deadline = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {deadline_s:.0f} s waiting until {what}")
        time.sleep(0.2)
