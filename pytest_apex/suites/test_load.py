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
processes whose histograms merge exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_apex.app.model import AppDescription
from pytest_apex.load.engine import (
    EngineSettings,
    LoadPlanRefused,
    LoadTargetUnreachable,
    SessionFactory,
    run,
)
from pytest_apex.load.result import PlanResult
from pytest_apex.load.verdict import judge_plan
from pytest_apex.load.workers import LoadWorkerFailed, run_workers
from pytest_apex.recording import CriteriaRecorder
from pytest_apex.reporting.live import live_writer
from pytest_apex.reporting.load_report import attach_load_report
from pytest_apex.settings import ApexSettings
from pytest_apex.suites.load_checks import (
    NOT_RESPONSE_TIMES,
    load_checks,
    load_plan,
    load_thresholds,
    summary,
)

pytestmark = pytest.mark.load


def test_staged_users_hold_the_slos(
    apex_criteria: CriteriaRecorder,
    apex_settings: ApexSettings,
    apex_app: AppDescription,
    apex_load_sessions: SessionFactory,
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    thresholds = apex_settings.thresholds
    plan = load_plan(thresholds)
    engine = EngineSettings(window_s=thresholds.seconds("load_window_s"))
    workers = apex_settings.load_workers
    failure = ""
    with live_writer(request.config) as writer:
        try:
            result: PlanResult = (
                run_workers(plan, apex_load_sessions, workers, settings=engine, writer=writer)
                if workers > 1
                else run(plan, apex_load_sessions, settings=engine, writer=writer)
            )
        except (LoadTargetUnreachable, LoadPlanRefused, LoadWorkerFailed) as exc:
            failure = str(exc)
    if failure:
        # One clear line instead of 150 users timing out (or a traceback through the engine).
        pytest.fail(failure, pytrace=False)
    attach_load_report(result, tmp_path, exclude=NOT_RESPONSE_TIMES)
    stages = [summary(stage) for stage in result.stages]
    request.node.user_properties.append(("load", json.dumps(stages)))
    criteria = judge_plan(
        result.stages, load_thresholds(thresholds, agent_runs=apex_app.capabilities.agent_runs)
    )
    apex_criteria.judge(load_checks(result.stages, criteria))
