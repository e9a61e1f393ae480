"""Load suite: staged concurrent users, each stage holding the report's SLOs.

The staging report's load test sent unauthenticated GETs to routes that answered 401, 405
and 404, and its only rule was "success rate > 95 %" (reference §1). Here every virtual
user is a real user of the app: it logs in once, then in every session lists what it owns,
posts, and runs the agent where the app has one (`capabilities.agent_runs`), thinking
between sessions. The adapter says how (`pytest_apex.adapters.base.LoadSessions`).

Stages come from the `load_stages` threshold (the report's 10, 25, 50, 100 and 150 users),
each `stage_duration_s` long (about 20 s in the ``ci`` profile, 1 h in ``staging``). Each
stage is judged on its own, and its p95 in every `load_window_s` window too, so a stall
inside a long stage cannot hide behind the stage's p95. A criterion that stands on too few
samples, in a stage that never reached its users or measured by a saturated generator, is
inconclusive with the reason, never a pass. ``--apex-load-workers N`` runs the users in N
processes whose histograms merge exactly, or, with ``--apex-executor ray``, in N actors
spread over a Ray cluster's nodes (`apex_load_executor`).

Beside the load, every service's health is probed on a fixed grid (`availability_probe_s`)
and the app's memory sampled (`memory_sample_s`): availability > 99.9 % holds over the
run. Where the app describes its monitoring (``[app.monitoring]``), each stage is also
judged by the server's own view of it: the p95 its request-duration histogram measured and
the alerts pending or firing (`pytest_apex.suites.load_server`); without a monitoring
endpoint on the target those criteria are skipped, with the reason in a warning. The soak
(`pytest -m soak`, also part of ``-m load``) holds users for
`soak_duration_s` (a minute in ``ci``; in ``staging`` the staged plan every 6 h for 24 h) and
gates memory by its least-squares growth after a warm-up as well as the report's variance,
because a slow leak passes the variance (reference §4).
"""

from __future__ import annotations

import json
import math
import threading
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import pytest

from pytest_apex.app.model import AppDescription
from pytest_apex.executors import ExecutorFailed, LoadExecutor
from pytest_apex.load.availability import HealthCheck
from pytest_apex.load.engine import (
    EngineSettings,
    LoadPlanRefused,
    LoadTargetUnreachable,
    SessionFactory,
)
from pytest_apex.load.progress import Writer
from pytest_apex.load.result import PlanResult, StageResult
from pytest_apex.load.stages import ClosedStage
from pytest_apex.load.verdict import judge_plan
from pytest_apex.monitoring import ServerWindow
from pytest_apex.recording import Check, CriteriaRecorder
from pytest_apex.reporting.live import live_writer
from pytest_apex.reporting.load_report import attach_load_report
from pytest_apex.settings import ApexSettings, Thresholds
from pytest_apex.suites.load_checks import (
    NOT_RESPONSE_TIMES,
    load_checks,
    load_plan,
    load_thresholds,
    planned_seconds,
    soak_plan,
    summary,
)
from pytest_apex.suites.load_fixtures import MemoryWatch
from pytest_apex.suites.load_server import ServerView, describe_window, server_checks
from pytest_apex.suites.load_watch import Watch, watching

pytestmark = pytest.mark.load


class ServerViewSkipped(UserWarning):
    """The server's view of the load was not read (the message says why)."""


def _run_plan(
    plan: Sequence[ClosedStage],
    sessions: SessionFactory,
    executor: LoadExecutor,
    settings: ApexSettings,
    writer: Writer,
) -> list[StageResult]:
    """The plan's stages, measured wherever `executor` runs the users."""
    engine = EngineSettings(
        window_s=settings.thresholds.seconds("load_window_s"), live_exclude=NOT_RESPONSE_TIMES
    )
    failure = ""
    try:
        result = executor.run(plan, sessions, settings=engine, writer=writer)
    except (LoadTargetUnreachable, LoadPlanRefused, ExecutorFailed) as exc:
        failure = str(exc)
    if failure:
        # One clear line instead of 150 users timing out (or a traceback through the engine).
        pytest.fail(failure, pytrace=False)
    return result.stages


def test_staged_users_hold_the_slos(
    apex_criteria: CriteriaRecorder,
    apex_settings: ApexSettings,
    apex_app: AppDescription,
    apex_load_sessions: SessionFactory,
    apex_load_executor: LoadExecutor,
    apex_health_checks: dict[str, HealthCheck],
    apex_memory_sources: MemoryWatch,
    apex_server_view: ServerView,
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    thresholds = apex_settings.thresholds
    plan = load_plan(thresholds)
    with (
        live_writer(request.config) as writer,
        watching(
            apex_health_checks, apex_memory_sources, thresholds, planned_seconds(plan)
        ) as watch,
    ):
        stages = _run_plan(plan, apex_load_sessions, apex_load_executor, apex_settings, writer)
    checks = _stage_checks(stages, watch, apex_app, thresholds, request, tmp_path)
    server, windows = server_checks(stages, apex_server_view, thresholds)
    for stage, window in zip(stages, windows, strict=False):
        print(describe_window(stage, window))
    if apex_server_view.skipped:
        warnings.warn(
            ServerViewSkipped(f"server criteria skipped: {apex_server_view.skipped}"), stacklevel=1
        )
    request.node.user_properties.append(
        ("server_view", json.dumps([_window_summary(w) for w in windows]))
    )
    apex_criteria.judge([*checks, *server, *watch.availability(thresholds)])


def _window_summary(window: ServerWindow) -> dict[str, object]:
    return {
        "started_at": round(window.started_at, 3),
        "ended_at": round(window.ended_at, 3),
        "p95_s": window.p95_s if math.isfinite(window.p95_s) else None,
        "requests": window.requests if math.isfinite(window.requests) else None,
        "alerts": [a.describe() for a in window.alerts],
        "error": window.error,
    }


@pytest.mark.soak
def test_soak_holds_memory_and_availability(
    apex_criteria: CriteriaRecorder,
    apex_settings: ApexSettings,
    apex_app: AppDescription,
    apex_load_sessions: SessionFactory,
    apex_load_executor: LoadExecutor,
    apex_health_checks: dict[str, HealthCheck],
    apex_memory_sources: MemoryWatch,
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    thresholds = apex_settings.thresholds
    plan, runs, interval = soak_plan(thresholds)
    planned = (runs - 1) * interval + planned_seconds(plan)
    stages: list[StageResult] = []
    pause = threading.Event()  # never set: waiting on it is a bounded pause until a start
    with (
        live_writer(request.config) as writer,
        watching(apex_health_checks, apex_memory_sources, thresholds, planned) as watch,
    ):
        started = time.monotonic()
        for index in range(runs):
            pause.wait(max(0.0, started + index * interval - time.monotonic()))
            ran = _run_plan(plan, apex_load_sessions, apex_load_executor, apex_settings, writer)
            stages.extend(_numbered(ran, index, runs, len(plan)))
    checks = _stage_checks(stages, watch, apex_app, thresholds, request, tmp_path)
    apex_criteria.judge([*checks, *watch.availability(thresholds), *watch.memory_gates(thresholds)])


def _stage_checks(
    stages: list[StageResult],
    watch: Watch,
    app: AppDescription,
    thresholds: Thresholds,
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> list[Check]:
    """Every stage's criteria as checks, its report attached first: a failing run still gets
    its table, charts and histograms."""
    attach_load_report(
        PlanResult(stages), tmp_path, memory=watch.memory_samples(), exclude=NOT_RESPONSE_TIMES
    )
    request.node.user_properties.append(("load", json.dumps([summary(s) for s in stages])))
    criteria = judge_plan(
        stages, load_thresholds(thresholds, agent_runs=app.capabilities.agent_runs)
    )
    return load_checks(stages, criteria)


def _numbered(
    stages: list[StageResult], run_index: int, runs: int, per_run: int
) -> list[StageResult]:
    """Stages of run k of n numbered within the whole soak, so each criterion is its own."""
    if runs == 1:
        return stages
    for stage in stages:
        stage.index = run_index * per_run + stage.index
        stage.count = runs * per_run
        stage.description = f"run {run_index + 1}/{runs}: {stage.description}"
    return stages
