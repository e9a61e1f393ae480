"""The reference stack's services through their real endpoints (clean stack, no faults)."""

from __future__ import annotations

import contextlib
import json
import time

import httpx
import jwt
import pytest
import websockets
from websockets.sync.client import connect

from pytest_apex.adapters.apex import jwt_subprotocol, ws_url
from pytest_apex.health.metrics import missing_series
from pytest_apex.reference import reference_description
from tests.conftest import read_env_file
from tests.stack.conftest import User, wait_until

AGENT_EVENTS = [
    "agent_started",
    "agent_thinking",
    "tool_executing",
    "tool_completed",
    "agent_completed",
]
EVENT_KEYS = {"type", "run_id", "thread_id", "agent_name", "timestamp", "payload"}


def forged_tokens(user: User) -> dict[str, str]:
    now = int(time.time())
    claims = {
        "sub": user.id,
        "email": user.email,
        "type": "access",
        "iat": now,
        "exp": now + 600,
        "jti": "forged",
    }
    secret = read_env_file()["JWT_SECRET"]
    return {
        "wrong-signature": jwt.encode(claims, "not-the-signing-secret-0123456789abcdef", "HS256"),
        "expired": jwt.encode({**claims, "iat": now - 7200, "exp": now - 3600}, secret, "HS256"),
        "alg-none": jwt.encode(claims, None, algorithm="none"),
        "refresh-as-access": jwt.encode({**claims, "type": "refresh"}, secret, "HS256"),
    }


def run_agent(backend: str, user: User, thread_id: str, text: str) -> list[dict]:
    events: list[dict] = []
    with connect(
        ws_url(backend), subprotocols=[jwt_subprotocol(user.token)], open_timeout=10
    ) as ws:
        ws.send(
            json.dumps(
                {
                    "type": "start_agent",
                    "message_id": "m1",
                    "payload": {"user_request": text, "thread_id": thread_id},
                }
            )
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            message = json.loads(ws.recv(timeout=deadline - time.monotonic()))
            if message["type"] in ("heartbeat", "run_accepted"):
                continue
            events.append(message)
            if message["type"] in ("agent_completed", "agent_error", "error"):
                break
    return events


def _drain_until_closed(ws) -> None:
    """Read until the server closes the socket (bounded by recv's timeout)."""
    for _ in range(100):
        ws.recv(timeout=10)


class TestAuth:
    def test_dev_login_answers_the_platform_shape(self, http, apex_endpoints):
        response = http.post(
            f"{apex_endpoints['auth']}/auth/dev/login", json={"email": "shape@apex.test"}
        )
        assert response.status_code == 200
        body = response.json()
        assert body["token_type"] == "Bearer"
        assert body["expires_in"] == 900
        assert body["user"]["email"] == "shape@apex.test"
        assert {"access_token", "refresh_token"} <= body.keys()
        claims = jwt.decode(body["access_token"], options={"verify_signature": False})
        assert claims["exp"] - claims["iat"] == 900
        assert jwt.get_unverified_header(body["access_token"])["alg"] == "HS256"

    def test_password_login_and_me(self, http, apex_endpoints):
        auth = apex_endpoints["auth"]
        email = f"pw-{time.time_ns()}@apex.test"
        http.post(f"{auth}/auth/dev/login", json={"email": email, "password": "s3cret-pass"})
        ok = http.post(f"{auth}/auth/login", json={"email": email, "password": "s3cret-pass"})
        assert ok.status_code == 200, ok.text
        me = http.get(
            f"{auth}/auth/me", headers={"Authorization": f"Bearer {ok.json()['access_token']}"}
        )
        assert me.json()["email"] == email
        wrong = http.post(f"{auth}/auth/login", json={"email": email, "password": "nope"})
        assert wrong.status_code == 401

    @pytest.mark.parametrize(
        "kind", ["wrong-signature", "expired", "alg-none", "refresh-as-access"]
    )
    def test_bad_tokens_are_rejected_on_rest_and_websocket(
        self, kind, http, apex_endpoints, new_user
    ):
        token = forged_tokens(new_user())[kind]
        headers = {"Authorization": f"Bearer {token}"}
        assert http.get(f"{apex_endpoints['auth']}/auth/me", headers=headers).status_code == 401
        assert (
            http.get(f"{apex_endpoints['backend']}/api/threads", headers=headers).status_code == 401
        )
        with (
            pytest.raises(websockets.exceptions.WebSocketException) as refused,
            connect(
                ws_url(apex_endpoints["backend"]),
                subprotocols=[jwt_subprotocol(token)],
                open_timeout=10,
            ) as ws,
        ):
            ws.recv(timeout=10)
        closed = refused.value
        code = getattr(getattr(closed, "rcvd", None), "code", None) or getattr(
            getattr(closed, "response", None), "status_code", None
        )
        assert code in (1008, 401, 403), f"{kind}: refused with {closed!r}"


class TestThreads:
    def test_threads_are_scoped_to_their_owner(self, http, apex_endpoints, new_user):
        backend = apex_endpoints["backend"]
        alice, bob = new_user(), new_user()
        created = http.post(
            f"{backend}/api/threads", json={"title": "alice's plan"}, headers=alice.auth
        )
        assert created.status_code == 201
        thread = created.json()
        assert thread["user_id"] == alice.id
        assert (
            http.get(f"{backend}/api/threads/{thread['id']}", headers=alice.auth).status_code == 200
        )
        assert (
            http.get(f"{backend}/api/threads/{thread['id']}", headers=bob.auth).status_code == 404
        )
        assert (
            http.get(f"{backend}/api/threads/{thread['id']}/messages", headers=bob.auth).status_code
            == 404
        )
        bob_ids = [t["id"] for t in http.get(f"{backend}/api/threads", headers=bob.auth).json()]
        assert thread["id"] not in bob_ids
        alice_ids = [t["id"] for t in http.get(f"{backend}/api/threads", headers=alice.auth).json()]
        assert thread["id"] in alice_ids

    def test_messages_round_trip(self, http, apex_endpoints, new_user):
        backend, user = apex_endpoints["backend"], new_user()
        thread = http.post(f"{backend}/api/threads", json={"title": "t"}, headers=user.auth).json()
        posted = http.post(
            f"{backend}/api/threads/{thread['id']}/messages",
            json={"content": "hello"},
            headers=user.auth,
        )
        assert posted.status_code == 201
        listed = http.get(f"{backend}/api/threads/{thread['id']}/messages", headers=user.auth)
        assert [m["content"] for m in listed.json()] == ["hello"]


class TestThreadPages:
    """GET /api/threads?limit=&offset=: offset pages of the caller's threads, newest first."""

    @staticmethod
    def _create(http: httpx.Client, backend: str, user: User, count: int) -> list[str]:
        """`count` threads of `user`, their ids newest first (the listing's order)."""
        url = f"{backend}/api/threads"
        ids = [
            http.post(url, json={"title": f"t{i}"}, headers=user.auth).json()["id"]
            for i in range(count)
        ]
        return ids[::-1]

    @staticmethod
    def _page(http: httpx.Client, backend: str, user: User, **params: int) -> list[dict]:
        response = http.get(f"{backend}/api/threads", params=params, headers=user.auth)
        assert response.status_code == 200, response.text
        assert isinstance(response.json(), list)
        return response.json()

    def test_pages_are_disjoint_complete_and_in_order(self, http, apex_endpoints, new_user):
        backend, user = apex_endpoints["backend"], new_user()
        created = self._create(http, backend, user, 7)
        for size in (1, 3, 7, 100):
            pages = []
            while not pages or len(pages[-1]) == size:  # a short or empty page is the last
                pages.append(self._page(http, backend, user, limit=size, offset=size * len(pages)))
                assert len(pages) <= 8, f"limit={size}: the walk does not end"
            walked = [t["id"] for page in pages for t in page]
            assert walked == created, size  # disjoint, complete, newest first
            assert all(t["user_id"] == user.id for page in pages for t in page)

    def test_default_and_largest_page_and_limit_bounds(self, http, apex_endpoints, new_user):
        backend, user = apex_endpoints["backend"], new_user()
        created = self._create(http, backend, user, 101)
        assert [t["id"] for t in self._page(http, backend, user)] == created[:50]
        assert [t["id"] for t in self._page(http, backend, user, limit=100)] == created[:100]
        assert [t["id"] for t in self._page(http, backend, user, limit=100, offset=100)] == [
            created[100]
        ]
        assert self._page(http, backend, user, offset=101) == []
        for params in ({"limit": 101}, {"limit": 0}, {"limit": -1}, {"offset": -1}):
            refused = http.get(f"{backend}/api/threads", params=params, headers=user.auth)
            assert refused.status_code == 422, (params, refused.text)

    def test_cached_pages_follow_a_new_thread(self, http, apex_endpoints, new_user):
        """Every cached page of the user goes stale with a new thread, later pages too."""
        backend, user = apex_endpoints["backend"], new_user()
        created = self._create(http, backend, user, 4)
        for _ in range(2):  # the second read is served from the cache
            assert [t["id"] for t in self._page(http, backend, user, limit=2, offset=2)] == (
                created[2:]
            )
        newest = self._create(http, backend, user, 1)
        assert [t["id"] for t in self._page(http, backend, user, limit=2, offset=2)] == (
            created[1:3]
        )
        assert [t["id"] for t in self._page(http, backend, user, limit=2)] == [
            *newest,
            created[0],
        ]

    def test_previews_are_the_own_latest_message(self, http, apex_endpoints, new_user):
        backend, alice, bob = apex_endpoints["backend"], new_user(), new_user()
        quiet, busy = self._create(http, backend, alice, 2)[::-1]
        bobs = self._create(http, backend, bob, 1)[0]
        for owner, thread, text in (
            (alice, busy, "first message of alice"),
            (bob, bobs, "bob writes something else entirely here"),
            (alice, busy, "alice's latest message, longer than thirty-two characters"),
        ):
            posted = http.post(
                f"{backend}/api/threads/{thread}/messages",
                json={"content": text},
                headers=owner.auth,
            )
            assert posted.status_code == 201, posted.text
        for _ in range(2):  # the second read is served from the cache
            previews = {
                t["id"]: t["last_message_preview"] for t in self._page(http, backend, alice)
            }
            assert previews == {
                busy: "alice's latest message, longer than thirty-two characters"[:32],
                quiet: None,
            }
        (listed,) = self._page(http, backend, bob)
        assert listed["last_message_preview"] == "bob writes something else entire"
        # A message posted after the page was cached shows at once.
        http.post(
            f"{backend}/api/threads/{quiet}/messages", json={"content": "now"}, headers=alice.auth
        )
        previews = {t["id"]: t["last_message_preview"] for t in self._page(http, backend, alice)}
        assert previews[quiet] == "now"


class TestAgentRun:
    def test_websocket_run_streams_all_five_events_in_order(self, http, apex_endpoints, new_user):
        backend, user = apex_endpoints["backend"], new_user()
        thread = http.post(
            f"{backend}/api/threads", json={"title": "run"}, headers=user.auth
        ).json()
        text = f"summarise order {time.time_ns()}"
        events = run_agent(backend, user, thread["id"], text)
        assert [e["type"] for e in events] == AGENT_EVENTS
        run_ids = {e["run_id"] for e in events}
        assert len(run_ids) == 1
        for event in events:
            assert event.keys() >= EVENT_KEYS, event
            assert event["thread_id"] == thread["id"]
            assert event["payload"]["user_id"] == user.id
            assert event["payload"]["user_request"] == text
        run_id = run_ids.pop()
        row = http.get(f"{backend}/api/runs/{run_id}", headers=user.auth)
        assert row.status_code == 200, row.text
        # The run's row is closed after its last event is sent (runner._record_end): wait
        # for it, bounded, rather than race it.
        wait_until(
            lambda: (
                http.get(f"{backend}/api/runs/{run_id}", headers=user.auth).json()[
                    "cleanup_completed"
                ]
                is True
            ),
            f"run {run_id} records its cleanup",
            deadline_s=15.0,
        )
        assert row.json()["user_id"] == user.id

    def test_bearer_header_and_ping(self, apex_endpoints, new_user):
        user = new_user()
        with connect(
            ws_url(apex_endpoints["backend"]),
            additional_headers={"Authorization": f"Bearer {user.token}"},
        ) as ws:
            ws.send(json.dumps({"type": "ping", "payload": {}, "message_id": "p1"}))
            while (reply := json.loads(ws.recv(timeout=10)))["type"] == "heartbeat":
                pass
            assert reply == {"type": "pong", "message_id": "p1"} or (
                reply["type"] == "pong" and reply.get("message_id") == "p1"
            )

    def test_connection_and_message_limits(self, apex_endpoints, new_user):
        user = new_user()
        url = ws_url(apex_endpoints["backend"])
        proto = [jwt_subprotocol(user.token)]
        with contextlib.ExitStack() as sockets:
            for _ in range(3):
                sockets.enter_context(connect(url, subprotocols=proto))
            with (
                connect(url, subprotocols=proto) as fourth,
                pytest.raises(websockets.exceptions.ConnectionClosed) as closed,
            ):
                fourth.recv(timeout=10)
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == 1008
        with connect(url, subprotocols=proto) as ws:
            ws.send(json.dumps({"type": "ping", "payload": {"pad": "x" * 9000}}))
            with pytest.raises(websockets.exceptions.ConnectionClosed) as too_big:
                _drain_until_closed(ws)
            assert too_big.value.rcvd is not None
            assert too_big.value.rcvd.code == 1009


class TestHealthAndIntrospection:
    @pytest.mark.parametrize(
        ("service", "path"),
        [
            ("backend", "/health"),
            ("backend", "/health/live"),
            ("backend", "/health/ready"),
            ("auth", "/health"),
            ("auth", "/health/ready"),
            ("frontend", "/health"),
        ],
    )
    def test_health_endpoints_pass(self, http, apex_endpoints, service, path):
        response = http.get(apex_endpoints[service] + path)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/health+json")
        assert response.json()["status"] == "pass"

    def test_liveness_and_config_name_the_instance(self, http, apex_endpoints):
        live = http.get(apex_endpoints["backend"] + "/health/live").json()
        config = http.get(apex_endpoints["backend"] + "/health/config").json()
        assert isinstance(live["instance"], str), live
        assert live["instance"], live
        assert config["instance"] == live["instance"]
        assert config["pagination"]["threads"] == {"default_limit": 50, "max_limit": 100}

    def test_readiness_checks_each_dependency(self, http, apex_endpoints):
        checks = http.get(apex_endpoints["backend"] + "/health/ready").json()["checks"]
        for name in ("postgres:responseTime", "redis:responseTime"):
            assert checks[name][0]["status"] == "pass", checks

    def test_metrics_expose_the_series_the_suites_use(self, http, apex_endpoints):
        text = http.get(apex_endpoints["backend"] + "/metrics").text
        metrics = reference_description().services["backend"].metrics
        assert metrics is not None
        assert not missing_series(text, metrics.series)

    def test_security_headers_and_cors(self, http, apex_endpoints):
        env = read_env_file()
        allowed = http.get(
            apex_endpoints["backend"] + "/health", headers={"Origin": env["CORS_ALLOWED_ORIGIN"]}
        )
        assert allowed.headers["x-content-type-options"] == "nosniff"
        assert allowed.headers["x-frame-options"] == "DENY"
        assert allowed.headers.get("access-control-allow-origin") == env["CORS_ALLOWED_ORIGIN"]
        foreign = http.get(
            apex_endpoints["backend"] + "/health", headers={"Origin": "http://evil.example"}
        )
        assert "access-control-allow-origin" not in foreign.headers

    def test_frontend_serves_the_page_and_proxies(self, http, apex_endpoints):
        front = apex_endpoints["frontend"]
        page = http.get(front + "/")
        assert page.status_code == 200
        assert 'data-testid="login"' in page.text
        via_proxy = http.post(f"{front}/auth/dev/login", json={"email": "proxy@apex.test"})
        assert via_proxy.status_code == 200
        token = via_proxy.json()["access_token"]
        assert (
            http.get(
                f"{front}/api/threads", headers={"Authorization": f"Bearer {token}"}
            ).status_code
            == 200
        )


def test_unknown_route_is_404_not_500(http, apex_endpoints):
    assert http.get(apex_endpoints["backend"] + "/api/nope").status_code in (401, 404)


def test_http_client_can_reach_every_service(apex_endpoints):
    for service in ("frontend", "backend", "auth"):
        assert httpx.get(apex_endpoints[service] + "/health", timeout=10).status_code == 200
