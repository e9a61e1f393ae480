"""What the server measured over one time window, from its request-duration histogram.

The histogram (a Prometheus histogram: ``<name>_bucket{le}``, ``<name>_count``) is the app's
own, named by its description (``[app.monitoring]``), as are the label matchers that keep
only its API answers and the alerts that are the app's. Windows are Unix times: Prometheus
stamps samples with its own clock, which is the host's on a compose target; a remote
server's clock must agree with the generator's to the second (NTP), or its windows shift.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from pytest_apex.monitoring.prometheus import PrometheusAPI, PrometheusError, Sample

# Alert states as the ALERTS series writes them; firing outranks pending.
_STATES = ("pending", "firing")
_POLL_S = 0.5


@dataclass(frozen=True)
class ActiveAlert:
    name: str
    state: str  # the worst state it reached in the window: pending or firing
    # The rule's own labels (severity, issue, ...), without alertname and alertstate.
    labels: Mapping[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        return f"{self.name} ({self.state})"


@dataclass(frozen=True)
class ServerWindow:
    """The server's view of [started_at, ended_at]. `error` says why it could not be read
    (then every number is NaN)."""

    started_at: float
    ended_at: float
    p95_s: float = math.nan
    requests: float = math.nan  # answers the histogram counted in the window
    alerts: tuple[ActiveAlert, ...] = field(default=())
    alerts_read: bool = False
    error: str = ""

    @property
    def firing(self) -> list[str]:
        return [a.name for a in self.alerts if a.state == "firing"]

    @property
    def pending_only(self) -> list[str]:
        return [a.name for a in self.alerts if a.state != "firing"]


def _matchers(selector: str) -> str:
    return "{" + selector + "}" if selector else ""


def read_window(
    api: PrometheusAPI,
    histogram: str,
    *,
    started_at: float,
    ended_at: float,
    selector: str = "",
    alert_selector: str | None = "",
) -> ServerWindow:
    """The p95 and count of `histogram` over the window, and the alerts matching
    `alert_selector` that were pending or firing in it (None: alerts are not read)."""
    seconds = max(1, math.ceil(ended_at - started_at))
    window = f"[{seconds}s]"
    where = _matchers(selector)
    try:
        p95 = api.scalar(
            f"histogram_quantile(0.95, sum by (le) (increase({histogram}_bucket{where}{window})))",
            ended_at,
        )
        requests = api.scalar(f"sum(increase({histogram}_count{where}{window}))", ended_at)
        alerts: tuple[ActiveAlert, ...] = ()
        if alert_selector is not None:
            matchers = ", ".join(
                m for m in (f'alertstate=~"{"|".join(_STATES)}"', alert_selector) if m
            )
            found = api.query(f"max_over_time(ALERTS{{{matchers}}}{window})", ended_at)
            alerts = _worst_states(found)
    except PrometheusError as exc:
        return ServerWindow(started_at, ended_at, error=str(exc))
    return ServerWindow(
        started_at,
        ended_at,
        p95_s=p95,
        requests=0.0 if math.isnan(requests) else requests,
        alerts=alerts,
        alerts_read=alert_selector is not None,
    )


def _worst_states(samples: list[Sample]) -> tuple[ActiveAlert, ...]:
    worst: dict[str, str] = {}
    labels: dict[str, dict[str, str]] = {}
    for sample in samples:
        name = sample.labels.get("alertname", "?")
        state = sample.labels.get("alertstate", "pending")
        if _STATES.index(state) >= _STATES.index(worst.get(name, "pending")):
            worst[name] = state
        own = {k: v for k, v in sample.labels.items() if k not in ("alertname", "alertstate")}
        labels.setdefault(name, {}).update(own)
    return tuple(
        ActiveAlert(name, state, labels.get(name, {})) for name, state in sorted(worst.items())
    )


def wait_evaluated(
    api: PrometheusAPI,
    histogram: str,
    moment: float,
    timeout_s: float,
    *,
    selector: str = "",
    clock: Callable[[], float] = time.monotonic,
    wall: Callable[[], float] = time.time,
    pause: Callable[[float], None] = time.sleep,
) -> str:
    """Wait until the server has scraped `histogram` and evaluated its rules past `moment`
    (Unix seconds). "" once it has; otherwise what it was still waiting for."""
    deadline = clock() + timeout_s
    expr = f"max(timestamp({histogram}_count{_matchers(selector)}))"
    waiting = ""
    while True:
        try:
            scraped = api.scalar(expr, wall())
            evaluated = api.last_rule_evaluation()
        except PrometheusError as exc:
            waiting = str(exc)
        else:
            if math.isnan(scraped):
                waiting = f"no {histogram}_count series{_matchers(selector)} at all"
            elif scraped < moment:
                waiting = f"last scrape of {histogram} {moment - scraped:.1f} s before the end"
            elif not math.isnan(evaluated) and evaluated < moment:
                waiting = f"rules last evaluated {moment - evaluated:.1f} s before the end"
            else:
                return ""
        if clock() >= deadline:
            return f"{waiting} (after {timeout_s:g} s)"
        pause(_POLL_S)
