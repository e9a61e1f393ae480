"""The HTTP session through its client seam: statuses and client errors by kind."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from pytest_apex.load.engine import EngineSettings, run_plan
from pytest_apex.load.http import HttpRequest, HttpSessionFactory
from pytest_apex.load.result import PlanResult, merge_plans
from pytest_apex.load.stages import ClosedStage


class _Response:
    def __init__(self, status: int) -> None:
        self.status = status

    async def read(self) -> bytes:
        return b"{}"


class _Call:
    def __init__(self, outcome: Any) -> None:
        self.outcome = outcome

    async def __aenter__(self) -> _Response:
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return _Response(self.outcome)

    async def __aexit__(self, *exc: object) -> None:
        return None


class FakeClient:
    """Answers each path with a scripted status or exception; records what was asked."""

    def __init__(self, outcomes: dict[str, Any]) -> None:
        self.outcomes = outcomes
        self.calls: list[tuple[str, str]] = []
        self.closed = False

    def request(self, method: str, url: Any, **kwargs: Any) -> _Call:
        self.calls.append((method, str(url)))
        return _Call(self.outcomes[str(url).rsplit("/", 1)[1]])

    def get(self, url: str) -> _Call:
        return _Call(200)

    async def close(self) -> None:
        self.closed = True


async def test_statuses_and_client_errors_count_by_kind():
    client = FakeClient(
        {
            "ok": 200,
            "missing": 404,
            "broken": 502,
            "reset": aiohttp.ServerDisconnectedError(),
            "garbled": aiohttp.ClientPayloadError("truncated body"),
            "slow": TimeoutError(),
        }
    )
    names = ["ok", "missing", "broken", "reset", "garbled", "slow"]
    # A session stops at its first failure (no point posting after a failed login), so each
    # request gets a plan of its own.
    kinds = {}
    for name in names:
        single = HttpSessionFactory(
            "http://target.invalid",
            requests=(HttpRequest(name, path=f"/{name}", method="POST"),),
            client_factory=lambda _: client,
        )
        stage = (
            await run_plan(
                [ClosedStage(users=1, duration_s=5, max_requests=3)],
                single,
                settings=EngineSettings(grace_s=1),
                cpu_percent=lambda: 1.0,
            )
        ).stages[0]
        if name == "ok":
            assert (stage.ops[name].ok, stage.ops[name].error_count) == (3, 0)
            continue
        assert stage.ops[name].error_count == 3
        (kinds[name],) = stage.ops[name].errors
    assert kinds == {
        "missing": "4xx",
        "broken": "5xx",
        "reset": "connection",
        "garbled": "protocol",
        "slow": "timeout",
    }
    assert client.closed
    assert ("POST", "http://target.invalid/ok") in client.calls


async def test_results_round_trip_and_refuse_mismatched_merges():
    client = FakeClient({"ok": 200})
    factory = HttpSessionFactory(
        "http://target.invalid",
        requests=(HttpRequest("ok", path="/ok"),),
        client_factory=lambda _: client,
    )
    result = await run_plan(
        [ClosedStage(2, 5, max_requests=40), ClosedStage(3, 5, max_requests=30)],
        factory,
        cpu_percent=lambda: 1.0,
    )
    again = PlanResult.decode(result.encode())
    assert [s.completed for s in again.stages] == [40, 30]
    assert again.stages[1].latency().count == 30
    doubled = merge_plans([result, again])
    assert [s.completed for s in doubled.stages] == [80, 60]
    with pytest.raises(ValueError, match="different numbers of stages"):
        merge_plans([result, PlanResult(result.stages[:1])])
