"""The drill's checks without a stack: read-back by owner, canary measurements, alert windows."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from pytest_apex.adapters.rest import Answer
from pytest_apex.app.model import Resource
from pytest_apex.criteria import Criterion
from pytest_apex.load.availability import AvailabilityProber
from pytest_apex.load.generator import GeneratorHealth
from pytest_apex.load.measure import StageRecorder
from pytest_apex.load.result import StageResult
from pytest_apex.recording import Check
from pytest_apex.rollback.analysis import decide, measurements_from_criteria
from pytest_apex.settings import Thresholds
from pytest_apex.suites.rollback_canary import (
    health_measurements,
    latencies,
    load_measurements,
    measurement_of,
)
from pytest_apex.suites.rollback_data import Written, readback_checks, write, write_check
from pytest_apex.suites.rollback_drill import memory_check, outage_check, within

THREADS = Resource(
    "threads",
    "api",
    "/threads",
    owner_field="user_id",
    create={"title": "{canary}"},
    sub_resources=(
        Resource("messages", "api", "/threads/{parent_id}/messages", create={"text": "{canary}"}),
    ),
)


@dataclass
class FakeSession:
    """A user of an in-memory app; `store` is shared by all users (their rows by id)."""

    user_id: str
    store: dict[str, dict[str, Any]]
    leak_to: str = ""  # a user id that also gets this user's listing (a planted bug)
    refuse: bool = False
    username: str = ""
    email: str = ""
    created: list[str] = field(default_factory=list)

    async def create(
        self, name: str, values: Mapping[str, str], parent_id: str = "", *, resend: bool = False
    ) -> Answer:
        if self.refuse:
            return Answer("POST", f"/{name}", 503, {"detail": "down"}, "")
        item_id = f"{name}-{len(self.store)}"
        self.store[item_id] = {
            "id": item_id, "user_id": self.user_id, "kind": name, "parent": parent_id,
            "text": values["canary"],
        }  # fmt: skip
        return Answer("POST", f"/{name}", 201, self.store[item_id], "")

    async def list_all(
        self, name: str, parent_id: str = "", page_size: int | None = None
    ) -> tuple[list[Any], list[Any]]:
        items = [
            row for row in self.store.values()
            if row["kind"] == name and (not parent_id or row["parent"] == parent_id)
            and (row["user_id"] == self.user_id or self.leak_to == row["user_id"])
        ]  # fmt: skip
        return items, [Answer("GET", f"/{name}", 200, items, "")]

    async def read(self, name: str, item_id: str) -> Any: ...
    async def update(
        self, name: str, item_id: str, values: Mapping[str, str], *, resend: bool = False
    ) -> Any: ...
    async def close(self) -> None: ...


async def _two_users(**second: Any) -> tuple[list[FakeSession], list[Written]]:
    store: dict[str, dict[str, Any]] = {}
    sessions = [
        FakeSession("u1", store, username="u1"),
        FakeSession("u2", store, username="u2", **second),
    ]
    written = [Written(s.user_id, f"apex-canary-{s.user_id}") for s in sessions]
    for session, mine in zip(sessions, written, strict=True):
        await write(session, [THREADS], mine, "before")  # type: ignore[arg-type]
    return sessions, written


async def test_every_row_comes_back_to_its_owner_and_to_nobody_else() -> None:
    sessions, written = await _two_users()
    checks = {c.name: c for c in await readback_checks(sessions, [THREADS], written)}  # type: ignore[arg-type]
    assert checks["rows_returned_to_owner"].observed == 4
    assert checks["rows_returned_to_owner"].threshold == 4
    assert checks["rows_returned_to_others"].observed == 0


async def test_a_row_lost_or_shown_to_another_user_is_named() -> None:
    sessions, written = await _two_users(leak_to="u1")
    lost = written[0].items[1][1]  # u1's message; u1's thread stays, and u2 is shown it
    del sessions[0].store[lost]
    checks = {c.name: c for c in await readback_checks(sessions, [THREADS], written)}  # type: ignore[arg-type]
    returned, others = checks["rows_returned_to_owner"], checks["rows_returned_to_others"]
    assert returned.observed == 3
    assert f"u1's messages {lost}" in returned.detail
    assert others.observed > 0
    assert "of user u1 returned to u2" in others.detail
    assert "carries the canary of user u1" in others.detail


async def test_a_refused_write_fails_the_writes_check_of_its_phase() -> None:
    _sessions, written = await _two_users(refuse=True)
    check = write_check(written, "before")
    assert check.observed == 1
    assert "before: creating threads answered 503" in check.detail


def _stage(latency_s: float, count: int = 50, errors: int = 0) -> StageResult:
    recorder = StageRecorder(window_s=10)
    for i in range(count):
        recorder.record("list", i * 0.1, latency_s)
    for i in range(errors):
        recorder.record("list", i * 0.1, latency_s, None, "5xx")
    return StageResult(
        index=1, count=1, model="closed", description="8 users", target=8, reached=8,
        duration_s=8, elapsed_s=8, window_s=10,
        health=GeneratorHealth(cpu_percent=20.0, lag_p99_s=0.002, lag_max_s=0.004, ticks=100),
        ops=recorder.finish(), peak_users=8,
    )  # fmt: skip


def test_latencies_come_from_the_stage_histograms_at_their_precision() -> None:
    samples = latencies(_stage(0.05, count=30))
    assert len(samples) == 30
    assert samples[0] == pytest.approx(0.05, rel=0.001)


def test_a_slower_candidate_is_a_degradation_and_an_erring_one_an_error_rate() -> None:
    thresholds = Thresholds.defaults()
    slow = {m.name: m for m in load_measurements(_stage(0.05), _stage(2.6), thresholds)}
    assert slow["canary p95"].outcome == "fail"
    assert slow["canary latency vs baseline"].outcome == "fail"
    assert decide(slow.values()).action == "review"
    erring = {
        m.name: m for m in load_measurements(_stage(0.05), _stage(0.05, errors=10), thresholds)
    }
    assert erring["canary error_rate"].outcome == "fail"
    assert decide(erring.values()).action == "rollback"
    same = load_measurements(_stage(0.05), _stage(0.05), thresholds)
    assert decide(same).action == "promote"


def test_a_stage_with_no_responses_is_inconclusive_and_pauses() -> None:
    """The proof of Argo's trap: every metric missing ends the analysis inconclusive."""
    empty = load_measurements(_stage(0.05, count=0), _stage(0.05, count=0), Thresholds.defaults())
    assert {m.outcome for m in empty} == {"inconclusive"}
    assert decide(empty).action == "pause"
    missing = measurements_from_criteria(
        [], {"p95": "performance_degradation", "leaks": "isolation_failure"}
    )
    assert decide(missing).action == "pause"
    assert all("expected but not recorded" in m.detail for m in missing)


def test_health_is_judged_per_service_and_nothing_to_ask_is_inconclusive() -> None:
    measured = health_measurements({"api": lambda: "", "auth": lambda: "503 from /health/ready"})
    assert [m.outcome for m in measured] == ["pass", "fail"]
    assert decide(measured).action == "rollback"
    assert health_measurements({})[0].outcome == "inconclusive"


def test_a_measurement_keeps_the_reason_of_its_check() -> None:
    check = Check(
        "cross_user_events", 2, 0, "<=", detail="u1 got u2's canary", samples=9, min_samples=1
    )
    measured = measurement_of(check, "isolation_failure", prefix="smoke ")
    assert measured.name == "smoke cross_user_events"
    assert measured.outcome == "fail"
    assert "u1 got u2's canary" in measured.detail


def test_an_alert_measured_past_its_window_is_inconclusive() -> None:
    p95 = Check("p95", 0.4, 3.0, "<=", unit="s", samples=100, min_samples=20)
    on_time = within("post_rollback_p95", p95, 40, 300)
    late = within("post_rollback_p95", p95, 400, 300)
    criterion = Criterion("rollback", on_time.name, on_time.observed, on_time.threshold, on_time.op)
    assert criterion.outcome == "pass"
    assert "window 300 s" in on_time.detail
    assert "past its window" in late.inconclusive


def test_memory_without_a_limit_or_a_reading_is_inconclusive() -> None:
    assert memory_check({"api": 300 * 2**20}, {"api": 768 * 2**20}, 0.75).observed == pytest.approx(
        300 / 768
    )
    assert "runs unlimited" in memory_check({"api": 1.0}, {"api": 0}, 0.75).inconclusive
    assert "no memory reading" in memory_check({}, {"api": 1}, 0.75).inconclusive


def test_the_outage_counts_only_probes_from_the_decision_on() -> None:
    prober = AvailabilityProber({"api": lambda: ""}, 1.0, 10)
    seen = prober.services["api"]
    for at, reason in [(1, "down"), (2, ""), (10, "refused"), (11, "refused"), (12, "")]:
        seen.record(at, reason)
    check = outage_check(prober, "api", since_s=5, rto_max=60)
    assert check.observed == pytest.approx(1.0)
    assert "2 failed probes" in check.detail
    assert math.isnan(outage_check(prober, "web", 0, 60).observed)
