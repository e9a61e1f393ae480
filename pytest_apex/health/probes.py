"""Health endpoint probes that understand `application/health+json` (IETF draft)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import httpx

HEALTH_MEDIA_TYPE = "application/health+json"
VALID_STATUSES = frozenset({"pass", "warn", "fail"})


@dataclass(frozen=True)
class HealthProbe:
    """One GET of a health endpoint."""

    url: str
    status_code: int
    media_type: str
    seconds: float
    body: dict[str, Any] = field(default_factory=dict)
    error: str = ""

    @property
    def status(self) -> str:
        return str(self.body.get("status", "")) if self.body else ""

    @property
    def follows_health_json(self) -> bool:
        return self.media_type == HEALTH_MEDIA_TYPE and self.status in VALID_STATUSES

    def checks(self) -> dict[str, list[dict[str, Any]]]:
        raw = self.body.get("checks") or {}
        return {name: list(entries) for name, entries in raw.items() if isinstance(entries, list)}

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


def probe(client: httpx.Client, url: str) -> HealthProbe:
    started = time.perf_counter()
    try:
        response = client.get(url)
    except httpx.HTTPError as exc:
        return HealthProbe(url, 0, "", time.perf_counter() - started, error=repr(exc))
    seconds = time.perf_counter() - started
    media_type = response.headers.get("content-type", "").split(";")[0].strip()
    try:
        body = response.json()
    except ValueError:
        body = {}
    return HealthProbe(
        url, response.status_code, media_type, seconds, body if isinstance(body, dict) else {}
    )
