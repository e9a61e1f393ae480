"""The server's view of a load stage, against a fake Prometheus query API (MockTransport)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import httpx
import pytest

from pytest_apex.app.model import AppDescription, Monitoring
from pytest_apex.criteria import Stage
from pytest_apex.load.generator import GeneratorHealth
from pytest_apex.load.result import StageResult, merge_stages
from pytest_apex.monitoring import PrometheusAPI, PrometheusError, read_window, wait_evaluated
from pytest_apex.rollback.analysis import decide
from pytest_apex.rollback.matrix import DecisionMatrix
from pytest_apex.settings import Thresholds
from pytest_apex.suites.load_server import ServerView, describe_window, server_checks, server_view
from pytest_apex.suites.rollback_canary import server_measurements

HISTOGRAM = "http_request_duration_seconds"
SELECTOR = 'job="api"'
MONITORING = Monitoring("prometheus", HISTOGRAM, SELECTOR, 'alertname=~"Api.+"')
START, END = 1_800_000_000.0, 1_800_000_008.0


def _vector(*series: tuple[Mapping[str, str], float]) -> dict[str, Any]:
    result = [{"metric": dict(labels), "value": [END, str(value)]} for labels, value in series]
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


def _rules(last: str = "2030-01-01T00:00:00.5Z") -> dict[str, Any]:
    return {"status": "success", "data": {"groups": [{"name": "g", "lastEvaluation": last}]}}


class FakePrometheus:
    """Answers each query by the first key it contains; records what was asked."""

    def __init__(self, answers: Mapping[str, dict[str, Any]], rules: dict[str, Any]) -> None:
        self.answers = answers
        self.rules = rules
        self.queries: list[tuple[str, str]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v1/rules":
            return httpx.Response(200, json=self.rules)
        query = request.url.params["query"]
        self.queries.append((query, request.url.params["time"]))
        for key, answer in self.answers.items():
            if key in query:
                return httpx.Response(200, json=answer)
        return httpx.Response(200, json=_vector())


def _api(fake: Callable[[httpx.Request], httpx.Response]) -> PrometheusAPI:
    return PrometheusAPI(
        "http://prometheus.test", httpx.Client(transport=httpx.MockTransport(fake))
    )


def _fake(**answers: dict[str, Any]) -> FakePrometheus:
    base = {"timestamp(": _vector(({}, END + 1))}
    keyed = {
        "histogram_quantile": answers.get("p95", _vector(({}, 0.042))),
        "sum(increase(": answers.get("count", _vector(({}, 480.0))),
        "ALERTS": answers.get("alerts", _vector()),
    }
    return FakePrometheus({**base, **keyed}, answers.get("rules", _rules()))


def test_a_window_reads_the_histograms_p95_count_and_active_alerts() -> None:
    alerts = _vector(
        ({"alertname": "ApiErrors", "alertstate": "pending"}, 1.0),
        ({"alertname": "ApiErrors", "alertstate": "firing"}, 1.0),
        ({"alertname": "ApiSlow", "alertstate": "pending"}, 1.0),
    )
    fake = _fake(alerts=alerts)
    window = read_window(
        _api(fake),
        HISTOGRAM,
        started_at=START,
        ended_at=END,
        selector=SELECTOR,
        alert_selector='alertname=~"Api.+"',
    )
    assert window.p95_s == pytest.approx(0.042)
    assert window.requests == 480.0
    assert [a.describe() for a in window.alerts] == ["ApiErrors (firing)", "ApiSlow (pending)"]
    queries = dict(fake.queries)
    p95 = next(q for q in queries if "histogram_quantile" in q)
    # Over the stage's own seconds, ending at its end, on the described series only.
    assert f"{HISTOGRAM}_bucket{{{SELECTOR}}}[8s]" in p95
    assert queries[p95] == f"{END:.3f}"
    alert_query = next(q for q in queries if "ALERTS" in q)
    assert 'alertstate=~"pending|firing"' in alert_query
    assert 'alertname=~"Api.+"' in alert_query


def test_an_api_error_is_a_window_that_could_not_be_read() -> None:
    def broken(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"status": "error", "error": "parse error at char 3"})

    window = read_window(_api(broken), HISTOGRAM, started_at=START, ended_at=END)
    assert math.isnan(window.p95_s)
    assert "parse error at char 3" in window.error
    assert "http://prometheus.test/api/v1/query" in window.error


def test_an_unreachable_server_names_its_url() -> None:
    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    with pytest.raises(PrometheusError, match=r"prometheus\.test.*did not answer"):
        _api(refused).query("up", END)


def _stage(index: int = 1, *, started: float = START, ended: float = END) -> StageResult:
    health = GeneratorHealth(10.0, 0.001, 0.002, 1, False)
    return StageResult(
        index,
        1,
        "closed",
        "10 users",
        10,
        10,
        8.0,
        8.0,
        10.0,
        health,
        started_at=started,
        ended_at=ended,
    )


def _judge(fake: FakePrometheus, monitoring: Monitoring = MONITORING) -> dict[str, Any]:
    thresholds = Thresholds({"prometheus_wait_s": 0.0})
    checks, _ = server_checks([_stage()], ServerView(_api(fake), monitoring), thresholds)
    return {c.name: c for c in checks}


def test_a_clean_stage_passes_both_server_criteria() -> None:
    checks = _judge(_fake())
    assert checks["server_p95"].observed == pytest.approx(0.042)
    assert checks["server_p95"].threshold == 2.0
    assert not checks["server_p95"].inconclusive
    assert checks["server_alerts"].observed == 0
    assert checks["server_p95"].stage == Stage(1, 1, 10)
    assert '480 answers of http_request_duration_seconds{job="api"}' in checks["server_p95"].detail


def test_alerts_firing_during_the_stage_count_and_pending_ones_are_named() -> None:
    alerts = _vector(
        ({"alertname": "ApiErrors", "alertstate": "firing"}, 1.0),
        ({"alertname": "ApiMemory", "alertstate": "pending"}, 1.0),
    )
    check = _judge(_fake(alerts=alerts))["server_alerts"]
    assert check.observed == 1
    assert check.detail == "firing: ApiErrors; pending only: ApiMemory"


def test_an_alert_only_pending_does_not_count() -> None:
    alerts = _vector(({"alertname": "ApiMemory", "alertstate": "pending"}, 1.0))
    check = _judge(_fake(alerts=alerts))["server_alerts"]
    assert check.observed == 0
    assert check.detail == "pending only: ApiMemory"


def test_a_stage_the_server_counted_nothing_in_is_inconclusive() -> None:
    checks = _judge(_fake(count=_vector(), p95=_vector(({}, math.nan))))
    assert "counted no answers" in checks["server_p95"].inconclusive
    assert "does the selector" in checks["server_p95"].inconclusive


def test_a_server_that_never_scraped_past_the_end_makes_the_stage_inconclusive() -> None:
    fake = _fake()
    fake.answers = {**fake.answers, "timestamp(": _vector(({}, END - 30))}
    checks = _judge(fake)
    for name in ("server_p95", "server_alerts"):
        assert "had not scraped" in checks[name].inconclusive, checks[name]
        assert "30.0 s before the end" in checks[name].inconclusive


def test_a_stage_without_start_and_end_is_inconclusive_not_left_out() -> None:
    thresholds = Thresholds({"prometheus_wait_s": 0.0})
    stages = [_stage(1), _stage(2, started=math.nan, ended=math.nan)]
    for stage in stages:
        stage.count = 2
    checks, windows = server_checks(stages, ServerView(_api(_fake()), MONITORING), thresholds)
    assert len(windows) == 2
    by_stage = {(c.name, c.stage.index if c.stage else 0): c for c in checks}
    assert not by_stage[("server_p95", 1)].inconclusive
    for name in ("server_p95", "server_alerts"):
        assert "no start and end" in by_stage[(name, 2)].inconclusive


def test_alerts_not_read_when_the_description_says_so() -> None:
    monitoring = Monitoring("prometheus", HISTOGRAM, SELECTOR, None)
    assert set(_judge(_fake(), monitoring)) == {"server_p95"}


def test_no_view_no_criteria() -> None:
    view = ServerView(None, MONITORING, "no 'prometheus' endpoint")
    assert server_checks([_stage()], view, Thresholds.defaults()) == ([], [])


def test_waiting_gives_up_at_its_deadline_saying_why() -> None:
    fake = _fake(rules=_rules("2000-01-01T00:00:00Z"))
    ticks = iter(range(100))
    reason = wait_evaluated(
        _api(fake), HISTOGRAM, END, 3.0, clock=lambda: float(next(ticks)), pause=lambda s: None
    )
    assert reason.startswith("rules last evaluated")
    assert reason.endswith("(after 3 s)")


def test_a_merged_stage_spans_its_workers() -> None:
    merged = merge_stages([_stage(started=START + 1, ended=END), _stage(ended=END + 2)])
    assert (merged.started_at, merged.ended_at) == (START, END + 2)
    assert StageResult.decode(merged.encode()).ended_at == END + 2


def test_without_a_monitoring_endpoint_the_view_is_skipped_naming_the_option() -> None:
    app = AppDescription("app", {}, monitoring=MONITORING)
    view = server_view(app, {"api": "http://127.0.0.1:1"})
    assert view.api is None
    assert "no 'prometheus' endpoint" in view.skipped
    assert "--apex-url prometheus=URL" in view.skipped
    assert "no [monitoring] section" in server_view(AppDescription("app", {}), {}).skipped
    assert server_view(app, {"prometheus": "http://127.0.0.1:9"}).api is not None


def test_the_terminal_line_puts_the_servers_p95_beside_the_generators() -> None:
    alerts = _vector(({"alertname": "ApiMemory", "alertstate": "pending"}, 1.0))
    window = read_window(
        _api(_fake(alerts=alerts)), HISTOGRAM, started_at=START, ended_at=END, alert_selector=""
    )
    line = describe_window(_stage(), window)
    assert line == (
        "server view, stage 1/1 (10 users): p95 0.042 s (generator none), 480 answers; "
        "alerts firing: none; pending only: ApiMemory"
    )


def _canary(fake: FakePrometheus) -> dict[str, Any]:
    thresholds = Thresholds({"prometheus_wait_s": 0.0})
    view = ServerView(_api(fake), MONITORING)
    measured = server_measurements(_stage(), view, thresholds, DecisionMatrix.default())
    return {m.name: m for m in measured}


def test_the_canary_judges_each_firing_alert_as_the_issue_its_rule_names() -> None:
    alerts = _vector(
        ({"alertname": "ApiLeak", "alertstate": "firing", "issue": "isolation_failure"}, 1.0),
        ({"alertname": "ApiOdd", "alertstate": "firing", "issue": "not_a_kind"}, 1.0),
        ({"alertname": "ApiMemory", "alertstate": "pending", "issue": "memory_leak"}, 1.0),
    )
    measured = _canary(_fake(alerts=alerts))
    assert measured["canary alert ApiLeak"].kind == "isolation_failure"
    assert measured["canary alert ApiLeak"].outcome == "fail"
    assert "issue=isolation_failure" in measured["canary alert ApiLeak"].detail
    # A kind the decision matrix does not know is judged as an unhealthy service.
    assert measured["canary alert ApiOdd"].kind == "unhealthy_service"
    assert "canary alert ApiMemory" not in measured  # pending only
    assert measured["canary server_p95"].kind == "performance_degradation"
    assert measured["canary server_p95"].outcome == "pass"


def test_a_canary_without_firing_alerts_passes_its_server_alerts() -> None:
    measured = _canary(_fake())
    assert measured["canary server_alerts"].outcome == "pass"
    assert decide(measured.values()).action == "promote"
