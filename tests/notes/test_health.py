"""Liveness, readiness, security headers and CORS, on the clean stack."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.notes.conftest import User
from tests.notes.markers import NOTES_STACK
from tests.notes.stack import NotesStack

pytestmark = NOTES_STACK

ALLOWED_ORIGIN = "http://localhost:5173"  # compose.yml's default NOTES_CORS_ORIGIN
SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}
READINESS_DEADLINE_S = 30.0


@pytest.mark.parametrize("service", ["api", "identity"])
def test_healthz_is_plain_json_ok(http: httpx.Client, notes_stack: NotesStack, service: str):
    response = http.get(notes_stack.url(service) + "/healthz")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"ok": True}


def test_readyz_checks_the_database(http: httpx.Client, api: str) -> None:
    response = http.get(f"{api}/readyz")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["ok"] is True
    assert body["checks"]["db"]["ok"] is True


def test_every_answer_carries_the_security_headers(http: httpx.Client, api: str, new_user) -> None:
    user: User = new_user()
    answers = [
        http.get(f"{api}/healthz"),
        http.get(f"{api}/v1/notebooks", headers=user.auth),
        http.get(f"{api}/v1/notebooks"),  # 401
        http.get(f"{api}/v1/no-such-route", headers=user.auth),  # 404
    ]
    assert [a.status_code for a in answers] == [200, 200, 401, 404]
    for answer in answers:
        for name, value in SECURITY_HEADERS.items():
            assert answer.headers.get(name) == value, (answer.url, name)
        assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]


def test_cors_allows_the_configured_origin_only(http: httpx.Client, api: str, new_user) -> None:
    user: User = new_user()
    allowed = http.get(f"{api}/v1/notebooks", headers={**user.auth, "Origin": ALLOWED_ORIGIN})
    other = http.get(f"{api}/v1/notebooks", headers={**user.auth, "Origin": "https://evil.test"})
    assert allowed.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert "access-control-allow-origin" not in other.headers
    preflight = {"Access-Control-Request-Method": "POST"}
    ok = http.options(f"{api}/v1/notebooks", headers={**preflight, "Origin": ALLOWED_ORIGIN})
    refused = http.options(
        f"{api}/v1/notebooks", headers={**preflight, "Origin": "https://evil.test"}
    )
    assert ok.status_code == 204
    assert ok.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert "Authorization" in ok.headers["access-control-allow-headers"]
    assert refused.status_code == 403
    assert "access-control-allow-origin" not in refused.headers


def _ready_status(http: httpx.Client, api: str) -> int:
    return http.get(f"{api}/readyz").status_code


def wait_until(condition, what: str, deadline_s: float = READINESS_DEADLINE_S) -> None:
    deadline = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {deadline_s:.0f} s waiting until {what}")
        time.sleep(0.2)


def test_readiness_follows_the_database_and_liveness_does_not(
    http: httpx.Client, notes_stack: NotesStack, api: str
) -> None:
    notes_stack.stop_service("db")
    try:
        response = http.get(f"{api}/readyz")
        assert response.status_code == 503, response.text
        assert response.json()["checks"]["db"]["ok"] is False
        assert http.get(f"{api}/healthz").status_code == 200
    finally:
        notes_stack.start_service("db")
    wait_until(lambda: _ready_status(http, api) == 200, "the api is ready again")
