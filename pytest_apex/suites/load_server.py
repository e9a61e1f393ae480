"""The server's view of each load stage, judged next to the generator's.

Per stage, from the app's monitoring (``[app.monitoring]``): ``server_p95``, the p95 the
server's own request-duration histogram measured, against the same SLO as the generator's
p95 (the detail shows both, and their ratio: a generator far slower than the server is
measuring itself or the network, a server slower than its users' answers is counting
something else); and ``server_alerts``, the app's alerts firing during the stage. Only
firing ones count: a rule's ``for:`` is its author's word on how long a condition must hold
before it means something (a memory slope over an hour is steep for any process just
started), so alerts only pending are named in the detail, not judged. A stage the server
counted no answers in, or that the server had not scraped and evaluated past when it was
read, is inconclusive, never a pass.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pytest_apex.app.model import AppDescription, Monitoring
from pytest_apex.criteria import Stage
from pytest_apex.load.result import StageResult
from pytest_apex.monitoring import PrometheusAPI, ServerWindow, read_window, wait_evaluated
from pytest_apex.recording import Check
from pytest_apex.reporting.load_report import stage_row
from pytest_apex.settings import Thresholds
from pytest_apex.suites.load_checks import NOT_RESPONSE_TIMES


@dataclass(frozen=True)
class ServerView:
    """Where the run reads the server's view, or why it does not (`skipped`)."""

    api: PrometheusAPI | None
    monitoring: Monitoring | None
    skipped: str = ""


def server_view(app: AppDescription, endpoints: Mapping[str, str]) -> ServerView:
    """Where this target's monitoring answers, or why the server's view is skipped."""
    monitoring = app.monitoring
    if monitoring is None:
        return ServerView(None, None, "the app description has no [monitoring] section")
    base = endpoints.get(monitoring.endpoint)
    if not base:
        return ServerView(
            None,
            monitoring,
            f"the target has no {monitoring.endpoint!r} endpoint for the app's monitoring "
            f"(give one with --apex-url {monitoring.endpoint}=URL)",
        )
    return ServerView(PrometheusAPI(base), monitoring)


def server_checks(
    stages: Sequence[StageResult], view: ServerView, thresholds: Thresholds
) -> tuple[list[Check], list[ServerWindow]]:
    """Each stage's server criteria, and the windows they were judged on."""
    api, monitoring = view.api, view.monitoring
    if api is None or monitoring is None:
        return [], []
    timed = {id(s): s for s in stages if math.isfinite(s.started_at) and math.isfinite(s.ended_at)}
    waited = (
        wait_evaluated(
            api,
            monitoring.request_duration,
            max(s.ended_at for s in timed.values()),
            thresholds.seconds("prometheus_wait_s"),
            selector=monitoring.selector,
        )
        if timed
        else ""
    )
    checks: list[Check] = []
    windows: list[ServerWindow] = []
    for stage in stages:
        if id(stage) not in timed:
            # No worker measured it (every one was lost), so nobody knows when it ran.
            window = ServerWindow(
                math.nan, math.nan, error="the stage has no start and end to read it between"
            )
        else:
            window = read_window(
                api,
                monitoring.request_duration,
                started_at=stage.started_at,
                ended_at=stage.ended_at,
                selector=monitoring.selector,
                alert_selector=monitoring.alerts,
            )
        windows.append(window)
        checks.extend(_stage_checks(stage, window, monitoring, thresholds, waited))
    return checks, windows


def _stage_checks(
    stage: StageResult,
    window: ServerWindow,
    monitoring: Monitoring,
    thresholds: Thresholds,
    waited: str,
) -> list[Check]:
    where = Stage(stage.index, stage.count, stage.target)
    series = monitoring.request_duration + (
        "{" + monitoring.selector + "}" if monitoring.selector else ""
    )
    unread = ""
    if waited:
        unread = f"the server had not scraped and evaluated past the stage's end: {waited}"
    elif window.error:
        unread = f"the server's view could not be read: {window.error}"
    client = stage_row(stage, exclude=NOT_RESPONSE_TIMES)["p95_s"]
    detail = f"the server counted {window.requests:.0f} answers of {series}"
    if isinstance(client, float) and math.isfinite(window.p95_s) and window.p95_s > 0:
        ratio = client / window.p95_s
        detail += f"; the generator's p95 {client:.3f} s ({ratio:.1f}x the server's)"
    no_answers = (
        f"the server counted no answers of {series} during the stage: does the selector "
        "match the API's series, and does the server scrape it?"
        if window.requests == 0
        else ""
    )
    p95 = Check(
        "server_p95",
        window.p95_s,
        thresholds.seconds("p95_s_max"),
        "<",
        unit="s",
        detail=detail,
        inconclusive=unread or no_answers,
        stage=where,
    )
    checks = [p95]
    if monitoring.alerts is not None:
        firing, pending = window.firing, window.pending_only
        seen = [f"firing: {', '.join(firing)}"] if firing else []
        seen += [f"pending only: {', '.join(pending)}"] if pending else []
        checks.append(
            Check(
                "server_alerts",
                float(len(firing)),
                0.0,
                "<=",
                detail="; ".join(seen) or "no alert pending or firing",
                inconclusive=unread,
                stage=where,
            )
        )
    return checks


def describe_window(stage: StageResult, window: ServerWindow) -> str:
    """One line per stage for the terminal: the server's numbers beside the generator's."""
    head = f"server view, stage {stage.index}/{stage.count} ({stage.target} users): "
    if window.error:
        return head + f"unread: {window.error}"
    client = stage_row(stage, exclude=NOT_RESPONSE_TIMES)["p95_s"]
    generator = f"{client:.3f} s" if isinstance(client, float) else "none"
    firing, pending = window.firing, window.pending_only
    return head + (
        f"p95 {window.p95_s:.3f} s (generator {generator}), {window.requests:.0f} answers; "
        f"alerts firing: {', '.join(firing) or 'none'}; "
        f"pending only: {', '.join(pending) or 'none'}"
    )
