"""What a virtual user does, built from an app description alone (no app needed)."""

from __future__ import annotations

import pickle

import pytest

from pytest_apex.adapters.apex import ApexAdapter
from pytest_apex.adapters.apex_load import ApexLoadSessions
from pytest_apex.adapters.base import LoadSessions
from pytest_apex.adapters.load import Call, LoadScenario, RestLoadSessions, rest_load_sessions
from pytest_apex.adapters.rest import AdapterError, RestAdapter
from pytest_apex.app import find_description, load_description
from pytest_apex.app.model import AppDescription, Service
from tests.conftest import ROOT

SCENARIO = LoadScenario(think_s=0.5, run="r1")


def test_the_reference_stack_lists_threads_posts_messages_and_runs_the_agent() -> None:
    adapter = ApexAdapter({"auth": "http://auth:1", "backend": "http://backend:2"})
    assert isinstance(adapter, LoadSessions)
    sessions = adapter.load_sessions(SCENARIO)
    assert isinstance(sessions, ApexLoadSessions)
    assert sessions.login == Call("POST", "http://auth:1/auth/dev/login", {"email": "{email}"})
    assert sessions.username == "user{index}-r1@apex.test"
    assert sessions.lists == ("http://backend:2/api/threads?offset=0",)
    assert sessions.post is not None
    assert sessions.post.parent.url == "http://backend:2/api/threads"
    assert sessions.post.child.url == "http://backend:2/api/threads/{parent_id}/messages"
    assert sessions.ws_url == "ws://backend:2/ws"
    # Worker processes get a copy: the factory must travel before it is opened.
    copy = pickle.loads(pickle.dumps(sessions))
    assert copy == sessions


def test_a_plain_rest_app_signs_up_lists_every_page_style_and_posts_under_its_resource() -> None:
    data, found_in = find_description(ROOT / "fixtures" / "notes")
    notes = load_description(data, found_in)
    endpoints = {"api": "http://api:1", "identity": "http://id:2"}
    sessions = RestAdapter(notes, endpoints).load_sessions(SCENARIO)
    assert type(sessions) is RestLoadSessions
    assert sessions.signup is not None
    assert sessions.signup.url == "http://id:2/v1/accounts"
    assert sessions.token_field == "jwt"
    assert sessions.lists == ("http://api:1/v1/notebooks?page=1",)
    assert sessions.post is not None
    assert sessions.post.child.url == "http://api:1/v1/notebooks/{parent_id}/notes"


def test_without_auth_there_are_no_load_users() -> None:
    app = AppDescription(name="bare", services={"api": Service("api", "api")})
    with pytest.raises(AdapterError, match="no \\[auth\\] section"):
        rest_load_sessions(app, {"api": "http://api:1"}, SCENARIO)
