"""Health endpoint probes: any 2xx, a JSON field, or `application/health+json` (IETF draft)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from pytest_apex.app.model import HealthRoute
from pytest_apex.jsonpath import dig

HEALTH_MEDIA_TYPE = "application/health+json"
VALID_STATUSES = frozenset({"pass", "warn", "fail"})
_RETRY_PAUSE_S = 0.05
_MIN_TIMEOUT_S = 0.001  # httpx reads 0 as "no timeout"


@dataclass(frozen=True)
class HealthProbe:
    """One GET of a health endpoint."""

    url: str
    status_code: int  # 0 when nothing answered
    media_type: str
    seconds: float  # time to the answer; when none came, how long the probe waited
    body: dict[str, Any] = field(default_factory=dict)
    error: str = ""

    @property
    def answered(self) -> bool:
        """An HTTP answer came back (any status); a refused or timed-out probe did not."""
        return not self.error

    @property
    def status(self) -> str:
        return str(self.body.get("status", "")) if self.body else ""

    @property
    def ok(self) -> bool:
        """Answered 2xx with a passing (or warning) status: the service says it can serve."""
        return 200 <= self.status_code < 300 and self.status in ("pass", "warn")

    def healthy(self, route: HealthRoute) -> bool:
        """Whether the answer says "healthy" in the route's format: a health+json status of
        pass or warn, any 2xx, or a 2xx whose JSON field holds the expected value."""
        if not 200 <= self.status_code < 300:
            return False
        match route.format:
            case "health+json":
                return self.ok
            case "json-field":
                return bool(route.field) and dig(self.body, route.field) == route.expect
            case _:
                return True

    @property
    def follows_health_json(self) -> bool:
        return self.media_type == HEALTH_MEDIA_TYPE and self.status in VALID_STATUSES

    def checks(self) -> dict[str, list[dict[str, Any]]]:
        raw = self.body.get("checks") or {}
        return {name: list(entries) for name, entries in raw.items() if isinstance(entries, list)}

    def dependency_status(self, component: str) -> str:
        """The worst status reported for `component` (``fail`` > ``warn`` > ``pass``), or ""
        when no check names it: a readiness that forgets a dependency must not read as pass."""
        statuses = {
            str(entry.get("status", ""))
            for name, entries in self.checks().items()
            if name.split(":", 1)[0] == component
            for entry in entries
        }
        for status in ("fail", "warn", "pass"):
            if status in statuses:
                return status
        return "fail" if statuses else ""

    def failing_checks(self) -> dict[str, str]:
        """`component:measurement` -> the reason it fails (its `output`, or its status)."""
        failing = {}
        for name, entries in self.checks().items():
            for entry in entries:
                if entry.get("status") == "fail":
                    failing[name] = str(entry.get("output") or "status fail")
        return failing

    def describe_failure(self) -> str:
        if self.error:
            return f"{self.url}: {self.error}"
        failing = self.failing_checks()
        if failing:
            return f"{self.url} answered {self.status_code}: " + "; ".join(
                f"{name} failed ({reason})" for name, reason in sorted(failing.items())
            )
        return f"{self.url} answered {self.status_code} with status {self.status or '?'}"

    def describe_conformance(self) -> str:
        """Why the answer is not `application/health+json` ("" when it is)."""
        if self.error:
            return f"{self.url}: {self.error}"
        problems = []
        if self.media_type != HEALTH_MEDIA_TYPE:
            problems.append(f"Content-Type {self.media_type or 'missing'}")
        if self.status not in VALID_STATUSES:
            problems.append(f"status {self.status or 'missing'!r} not one of pass/warn/fail")
        return f"{self.url}: " + ", ".join(problems) if problems else ""


def probe(client: httpx.Client, url: str) -> HealthProbe:
    """One GET of a health endpoint; a connection error, a timeout or anything else the
    client raised is recorded, not raised: a probe's failure is an unhealthy answer, and the
    availability prober that calls it must go on probing."""
    started = time.perf_counter()
    try:
        response = client.get(url)
    except Exception as exc:  # not only httpx.HTTPError: h11 and ssl errors escape it too
        return HealthProbe(url, 0, "", time.perf_counter() - started, error=repr(exc))
    return _answer(url, response, time.perf_counter() - started)


def _answer(url: str, response: httpx.Response, seconds: float) -> HealthProbe:
    media_type = response.headers.get("content-type", "").split(";")[0].strip()
    try:
        body = response.json()
    except ValueError:
        body = {}
    return HealthProbe(
        url, response.status_code, media_type, seconds, body if isinstance(body, dict) else {}
    )


def timed_probe(client: httpx.Client, url: str, budget_s: float) -> HealthProbe:
    """Time until `url` answers at all, within `budget_s`.

    A refused connection is not a fast answer: it is retried until the service answers or
    the budget is spent, as an orchestrator's probe with that timeout would see it. An
    unanswered probe's `seconds` is then the time it waited, at least `budget_s` (a lower
    bound of a response time that never came), so a budget above the threshold fails it.
    """
    started = time.perf_counter()
    deadline = started + budget_s
    while True:
        remaining = deadline - time.perf_counter()
        try:
            response = client.get(url, timeout=max(remaining, _MIN_TIMEOUT_S))
        except httpx.HTTPError as exc:
            if time.perf_counter() + _RETRY_PAUSE_S < deadline:
                time.sleep(_RETRY_PAUSE_S)  # the polling interval of a deadline-bound retry
                continue
            waited = max(time.perf_counter() - started, budget_s)
            return HealthProbe(
                url, 0, "", waited, error=f"no answer within {budget_s:g} s: {exc!r}"
            )
        return _answer(url, response, time.perf_counter() - started)


def probe_repeatedly(
    client: httpx.Client, url: str, count: int, budget_s: float
) -> list[HealthProbe]:
    """Up to `count` sequential timed probes of one endpoint: one probe's time is noise, the
    slowest of several is what an orchestrator's health check with a timeout would see.
    Stops at the first unanswered one, which already decides the criterion."""
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    probes: list[HealthProbe] = []
    for _ in range(count):
        probes.append(timed_probe(client, url, budget_s))
        if not probes[-1].answered:
            break
    return probes


@dataclass(frozen=True)
class ResponseTime:
    """How fast one service's health endpoints answered, over every probe of them."""

    probes: tuple[HealthProbe, ...]

    @property
    def unanswered(self) -> list[HealthProbe]:
        return [p for p in self.probes if not p.answered]

    @property
    def slowest(self) -> HealthProbe | None:
        """The probe that decides: an unanswered one if any, else the slowest answer."""
        candidates = self.unanswered or list(self.probes)
        return max(candidates, key=lambda p: p.seconds) if candidates else None

    @property
    def seconds(self) -> float:
        """The slowest answer's time, or how long an unanswered probe waited; NaN with no
        probe at all (nothing measured must not read as fast)."""
        slowest = self.slowest
        return slowest.seconds if slowest else math.nan

    def describe(self) -> str:
        slowest = self.slowest
        if slowest is None:
            return "no health endpoint was probed"
        if not slowest.answered:
            return f"{slowest.url}: {slowest.error}"
        return f"slowest was {slowest.url} ({len(self.probes)} probes)"
