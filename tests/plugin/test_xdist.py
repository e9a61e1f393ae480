"""Under pytest-xdist: target hand-off to workers, one merged verdict, one teardown."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pytest

from pytest_apex import plugin
from pytest_apex.criteria import Criterion, Verdict
from pytest_apex.exitstatus import INCONCLUSIVE_EXIT
from pytest_apex.relay import ControllerInbox, WorkerOutbox
from pytest_apex.settings import ApexSettings
from tests.plugin.conftest import ApexPytester

# Four tests over two workers, each recording criteria of its own.
SPREAD_TESTS = """
import pytest

@pytest.mark.parametrize("n", range(4))
@pytest.mark.load
def test_stage(apex_criteria, n):
    apex_criteria.check(f"p95_{n}", 1.0 + n, 3.5, "<", unit="s")
"""


def test_xdist_run_hands_off_the_target_and_merges_one_verdict(apex: ApexPytester) -> None:
    # One -n 2 run (worker processes are slow to start) checked from three sides.
    apex.pytester.makepyfile(SPREAD_TESTS)
    result = apex.run("-n", "2")
    result.assert_outcomes(passed=3, failed=1)

    # The criteria of both workers end up in one report and one summary.
    report = apex.report()
    assert sorted(c["name"] for c in report["criteria"]) == ["p95_0", "p95_1", "p95_2", "p95_3"]
    assert report["verdict"] == "fail"
    assert report["counts"] == {"passed": 3, "failed": 1}
    result.stdout.fnmatch_lines(
        ["load: 3 passed, 1 failed, 0 inconclusive", "verdict: FAIL (3/4 criteria met)"]
    )

    # Each worker built its session from the controller's workerinput.
    created = [e for e in apex.events() if e["event"] == "created"]
    controller = [e for e in created if e["role"] == "controller"]
    workers = [e for e in created if e["role"] == "worker"]
    assert len(controller) == 1
    assert len(workers) == 2
    assert controller[0]["pid"] not in {w["pid"] for w in workers}
    for worker in workers:
        assert worker["workerinput"] == {
            "apex_project": "apexrun-fake",
            "apex_state_dir": "/nonexistent/apex-state",
        }

    # Only the controller describes the target (for the report) and tears it down.
    by_event: dict[str, list[str]] = {}
    for event in apex.events():
        by_event.setdefault(event["event"], []).append(event.get("role", ""))
    assert by_event["finish"] == ["controller"]
    assert by_event["describe"] == ["controller"]


class _FakeLifecycleSession:
    calls: ClassVar[list[tuple[str, Any]]] = []

    @classmethod
    def for_controller(cls, settings: ApexSettings) -> str:
        cls.calls.append(("for_controller", settings))
        return "controller-session"

    @classmethod
    def from_workerinput(cls, settings: ApexSettings, workerinput: dict[str, str]) -> str:
        cls.calls.append(("from_workerinput", dict(workerinput)))
        return "worker-session"


class _Config:
    """Just what the default session hook reads from a config."""


def test_default_session_hook_uses_the_lifecycle_api(monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_apex.targets import lifecycle

    monkeypatch.setattr(lifecycle, "TargetSession", _FakeLifecycleSession)
    _FakeLifecycleSession.calls = []
    settings = ApexSettings(rootdir=Path())
    controller, worker = _Config(), _Config()
    worker.workerinput = {"apex_project": "p", "apex_state_dir": "/s"}  # type: ignore[attr-defined]

    assert plugin.pytest_apex_target_session(settings, controller) == "controller-session"  # type: ignore[arg-type]
    assert plugin.pytest_apex_target_session(settings, worker) == "worker-session"  # type: ignore[arg-type]
    assert _FakeLifecycleSession.calls == [
        ("for_controller", settings),
        ("from_workerinput", {"apex_project": "p", "apex_state_dir": "/s"}),
    ]


def test_configure_node_hands_over_the_session_workerinput(apex: ApexPytester) -> None:
    config = apex.configure()
    node = type("Node", (), {"workerinput": {"workerid": "gw0"}})()
    _controller_hooks(config).pytest_configure_node(node)
    assert node.workerinput == {
        "workerid": "gw0",
        "apex_project": "apexrun-fake",
        "apex_state_dir": "/nonexistent/apex-state",
    }


def _controller_hooks(config: pytest.Config) -> plugin.XdistHooks:
    hooks = config.pluginmanager.get_plugin("apex-xdist")
    assert isinstance(hooks, plugin.XdistHooks)
    return hooks


def test_a_worker_that_crashed_adds_no_criterion_and_fails_the_verdict(apex: ApexPytester) -> None:
    config = apex.configure()
    node = type("Node", (), {"gateway": type("Gateway", (), {"id": "gw0"})()})()
    _controller_hooks(config).pytest_testnodedown(node, error="Segmentation fault")
    verdict = config.stash[plugin.verdict_key]
    assert verdict.criteria == []
    assert verdict.run_failures == ["xdist worker gw0 crashed: Segmentation fault"]
    assert verdict.status == "fail"


def test_a_crashed_worker_keeps_what_it_measured_and_fails_the_verdict(
    apex: ApexPytester,
) -> None:
    # One worker: it records, then dies mid-test; xdist restarts it for the remaining test,
    # whose criteria arrive twice (with its report and at shutdown) and count once.
    apex.pytester.makepyfile(
        """
        import os
        import pytest
        from pytest_apex import CriteriaRecorder

        @pytest.fixture(scope="session")
        def soak(pytestconfig):
            yield
            CriteriaRecorder(pytestconfig, suite="soak").record("memory_slope", 10, 1024, "<=")

        @pytest.mark.load
        def test_1_measured(apex_criteria):
            apex_criteria.check("p95", 1.0, 2.0, "<", unit="s")

        @pytest.mark.load
        def test_2_crashes(apex_criteria):
            apex_criteria.record("p99", 1.5, 3.0, "<", unit="s")
            os._exit(1)

        @pytest.mark.load
        def test_3_after_the_restart(apex_criteria, soak):
            apex_criteria.check("error_rate", 0.0, 0.01, "<")
        """
    )
    result = apex.run("-n", "1")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    report = apex.report()
    # p99 was recorded by the test that crashed, so it never reached a report: lost.
    names = sorted(c["name"] for c in report["criteria"])
    assert names == ["error_rate", "memory_slope", "p95"]
    assert report["verdict"] == "fail"
    assert report["run_failures"] == ["xdist worker gw0 crashed: Not properly terminated"]
    assert "xdist worker gw0 crashed: Not properly terminated" in report["reasons"]


def test_the_controller_counts_each_relayed_criterion_once() -> None:
    worker, controller = Verdict(), Verdict()
    outbox, inbox = WorkerOutbox(worker), ControllerInbox(controller)
    worker.add(Criterion("load", "p95", 1.0, 2.0, "<"))
    with_first_report = outbox.take_new()
    worker.add(Criterion("load", "p99", 1.5, 3.0, "<"))
    assert inbox.receive(with_first_report) == 1
    assert outbox.take_new()[0]["criterion"]["name"] == "p99"
    assert outbox.take_new() == []
    assert inbox.receive(outbox.everything()) == 1  # p99 arrives once; p95 is not counted twice
    assert inbox.receive(outbox.everything()) == 0  # testnodedown may come twice
    assert [c.name for c in controller.criteria] == ["p95", "p99"]
    # A restarted worker (same xdist id, new process) never collides with its predecessor.
    restarted = WorkerOutbox(Verdict(criteria=[Criterion("load", "p95", 1.0, 2.0, "<")]))
    assert inbox.receive(restarted.everything()) == 1


def test_under_xdist_the_controller_knows_which_tests_and_suites_left_it_inconclusive(
    apex: ApexPytester,
) -> None:
    apex.pytester.makepyfile(
        """
        import pytest

        @pytest.mark.isolation
        def test_partly_judged(apex_criteria):
            apex_criteria.check("cross_user_events", 0, 0, "<=")
            pytest.skip("the database check did not run")

        @pytest.mark.health
        def test_records_nothing():
            pass

        def test_explicit_suite_unjudged(apex_criteria):
            apex_criteria.check("p95", float("nan"), 2.0, "<", suite="load")
        """
    )
    result = apex.run("-n", "2")
    assert result.ret == INCONCLUSIVE_EXIT
    report = apex.report()
    assert report["suites_run"] == ["health", "isolation"]
    tests = {t["test"].split("::")[1]: t["reason"] for t in report["inconclusive_tests"]}
    assert tests["test_partly_judged"] == (
        "skipped after recording criteria: the database check did not run"
    )
    assert tests["test_explicit_suite_unjudged"].startswith("load p95 inconclusive")
    assert "suite health ran but recorded no criterion" in report["reasons"]
