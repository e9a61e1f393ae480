"""HTTP posture: the security headers the original health script checked, and CORS.

A CORS policy is only as good as what it refuses, so `foreign_origins` derives look-alikes
of the allowed origin (other scheme, suffix trick, `null`) that a sloppy origin match lets in.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

import httpx

# Header -> the value it must carry (compared case-insensitively).
SECURITY_HEADERS: Final[Mapping[str, str]] = {"x-content-type-options": "nosniff"}
# No framing at all, in either of the two ways browsers honour: X-Frame-Options DENY, or
# CSP frame-ancestors 'none' (which supersedes X-Frame-Options where both are sent).
_FRAME_ANCESTORS: Final = re.compile(r"(?:^|;)\s*frame-ancestors\s+([^;]+)", re.I)


def _framing_problem(headers: Mapping[str, str]) -> str:
    policy = _FRAME_ANCESTORS.search(headers.get("content-security-policy", ""))
    if policy:
        sources = policy.group(1).strip()
        return "" if sources == "'none'" else f"CSP frame-ancestors is {sources!r}, not 'none'"
    frame_options = headers.get("x-frame-options")
    if frame_options is None:
        return "x-frame-options missing (and no CSP frame-ancestors)"
    if frame_options.strip().lower() != "deny":
        return f"x-frame-options is {frame_options!r}, not 'DENY'"
    return ""


def security_header_problems(
    headers: Mapping[str, str], expected: Mapping[str, str] = SECURITY_HEADERS
) -> list[str]:
    """What is missing or wrong, e.g. ``["x-content-type-options missing"]`` ([] when all
    good): each expected header, and protection against framing in either form."""
    lowered = {k.lower(): v for k, v in headers.items()}
    problems = []
    for name, value in expected.items():
        seen = lowered.get(name.lower())
        if seen is None:
            problems.append(f"{name} missing")
        elif seen.strip().lower() != value.lower():
            problems.append(f"{name} is {seen!r}, not {value!r}")
    framing = _framing_problem(lowered)
    return [*problems, framing] if framing else problems


def foreign_origins(allowed: str) -> list[str]:
    """Origins that must be refused although they resemble `allowed`."""
    parts = urlsplit(allowed)
    other_scheme = "https" if parts.scheme == "http" else "http"
    return [
        "https://evil.example",
        "null",  # sandboxed iframes and file:// pages send this
        f"{allowed}.evil.example",  # a prefix match would let this in
        f"{other_scheme}://{parts.netloc}",  # the same host on another scheme is another origin
    ]


@dataclass(frozen=True)
class CorsAnswer:
    """What a server said to one origin: the Access-Control-Allow-Origin it sent back."""

    origin: str
    method: str  # "OPTIONS" (preflight) or "GET" (simple request)
    status_code: int
    allow_origin: str | None

    @property
    def allowed(self) -> bool:
        """The browser would let this origin read the response."""
        return self.allow_origin in (self.origin, "*")

    def describe(self) -> str:
        return (
            f"{self.method} from {self.origin}: {self.status_code}, "
            f"Access-Control-Allow-Origin {self.allow_origin or 'absent'}"
        )


def cors_answers(client: httpx.Client, url: str, origin: str) -> list[CorsAnswer]:
    """A preflight and a simple GET from `origin`: servers may treat the two differently."""
    preflight = client.options(
        url,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    simple = client.get(url, headers={"Origin": origin})
    return [
        CorsAnswer(
            origin,
            "OPTIONS",
            preflight.status_code,
            preflight.headers.get("access-control-allow-origin"),
        ),
        CorsAnswer(
            origin, "GET", simple.status_code, simple.headers.get("access-control-allow-origin")
        ),
    ]
