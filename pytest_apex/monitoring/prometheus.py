"""A small client of Prometheus' HTTP query API (``/api/v1``): instant queries and rule groups.

Only what the suites read: an instant vector at a given time (``/api/v1/query``) and when
each rule group was last evaluated (``/api/v1/rules``), so a reader can wait until the server
has scraped and evaluated past a moment. The HTTP client is injected (tests hand in one over
``httpx.MockTransport``); every failure is a `PrometheusError` naming the URL and the query.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

DEFAULT_TIMEOUT_S = 5.0
_RFC3339 = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|z|[+-]\d\d:\d\d)")


class PrometheusError(Exception):
    """The query API could not be read, or answered with an error."""


@dataclass(frozen=True)
class Sample:
    """One series of an instant vector: its labels and its value at the query's time."""

    labels: Mapping[str, str]
    value: float


class PrometheusAPI:
    """The query API at `base_url` (e.g. ``http://127.0.0.1:9090``)."""

    def __init__(
        self,
        base_url: str,
        client: httpx.Client | None = None,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._client = client or httpx.Client(timeout=timeout_s)

    def close(self) -> None:
        self._client.close()

    def query(self, expr: str, at: float) -> list[Sample]:
        """The instant vector of `expr` evaluated at `at` (Unix seconds)."""
        data = self._get("/api/v1/query", {"query": expr, "time": f"{at:.3f}"}, what=expr)
        if data.get("resultType") != "vector":
            raise PrometheusError(
                f"{self.base_url}: {expr!r} is a {data.get('resultType')}, not an instant vector"
            )
        return [
            Sample(dict(item.get("metric", {})), _number(item["value"][1]))
            for item in data.get("result", [])
        ]

    def scalar(self, expr: str, at: float) -> float:
        """The single value of `expr` at `at`; NaN when the vector is empty."""
        samples = self.query(expr, at)
        if len(samples) > 1:
            raise PrometheusError(
                f"{self.base_url}: {expr!r} returned {len(samples)} series where one was expected"
            )
        return samples[0].value if samples else math.nan

    def last_rule_evaluation(self) -> float:
        """When the least recently evaluated rule group was last evaluated (Unix seconds);
        NaN when the server has no rules."""
        data = self._get("/api/v1/rules", {}, what="rules")
        moments = [_moment(g["lastEvaluation"]) for g in data.get("groups", [])]
        return min(moments) if moments else math.nan

    def _get(self, path: str, params: Mapping[str, str], *, what: str) -> dict[str, Any]:
        url = self.base_url + path
        try:
            response = self._client.get(url, params=dict(params))
        except httpx.HTTPError as exc:
            raise PrometheusError(f"{url} did not answer ({what!r}): {exc}") from exc
        try:
            body = response.json()
        except ValueError:
            body = {}
        if response.status_code != 200 or body.get("status") != "success":
            error = body.get("error") or response.text[:200]
            raise PrometheusError(f"{url} answered {response.status_code} to {what!r}: {error}")
        return dict(body.get("data") or {})


def _number(text: str) -> float:
    # Prometheus writes NaN and infinities as "NaN", "+Inf", "-Inf": float() reads all three.
    return float(text)


def _moment(text: str) -> float:
    """An RFC 3339 time as Prometheus writes it (up to nanoseconds, "Z" or an offset) in Unix
    seconds. A group never evaluated reads "0001-01-01T00:00:00Z": far in the past."""
    found = _RFC3339.fullmatch(text)
    if found is None:
        raise PrometheusError(f"unreadable time {text!r} in the rules API's answer")
    head, fraction, zone = found.groups()
    base = datetime.fromisoformat(head + ("+00:00" if zone in ("Z", "z") else zone))
    return base.timestamp() + (float("0" + fraction) if fraction else 0.0)
