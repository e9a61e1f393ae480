"""Remove credentials from text before it is attached to a report or logged.

Suites handle real tokens and passwords (they log users in), and service logs echo them.
Everything the plugin attaches or prints passes through `redact` first. The patterns err on
the side of hiding too much: a redacted non-secret costs a reader a moment, a leaked token
in a CI artifact costs a rotation.
"""

from __future__ import annotations

import logging
import re
from typing import Final

MASK: Final = "[REDACTED]"

# Key names whose values are secrets, in JSON, Python reprs, env files, query strings, YAML.
_SECRET_KEY = (
    r"[\w.-]*(?:password|passwd|pwd|secret|token|api[_-]?key|apikey|credential|"
    r"private[_-]?key|session[_-]?id|cookie)[\w.-]*"
)

_PATTERNS: Final[tuple[tuple[re.Pattern[str], str], ...]] = (
    # "access_token": "…" / 'password': '…' (JSON and Python reprs; escaped quotes kept inside).
    (
        re.compile(rf"""(["'])({_SECRET_KEY})\1(\s*:\s*)(["'])(?:\\.|(?!\4).)*\4""", re.I),
        rf"\1\2\1\3\4{MASK}\4",
    ),
    # Bearer tokens, in headers, logs and curl lines (opaque ones too, not only JWTs).
    (re.compile(r"\b(Bearer\s+)[A-Za-z0-9._~+/=-]{8,}", re.I), rf"\1{MASK}"),
    # Basic credentials only next to "Authorization": "Basic" alone is an ordinary word.
    (
        re.compile(r"""(Authorization["']?\s*[:=]\s*["']?Basic\s+)[A-Za-z0-9+/=]+""", re.I),
        rf"\1{MASK}",
    ),
    # JWTs anywhere (header.payload.signature; the header always starts with base64 "{\"").
    (re.compile(r"\beyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*"), MASK),
    # WebSocket subprotocol carrying a token: "jwt.<base64url token>".
    # base64url of a JWT always starts "ZXlK" (the encoding of "eyJ").
    (re.compile(r"\bjwt\.ZXlK[A-Za-z0-9_=-]+"), f"jwt.{MASK}"),
    # Credentials in URLs: scheme://user:password@host.
    (re.compile(r"(\b[a-z][a-z0-9+.-]*://[^\s:/@]+:)[^\s@/]+@", re.I), rf"\1{MASK}@"),
    # key=value and key: value (env files, query strings, YAML, log lines).
    (
        re.compile(
            rf"""\b({_SECRET_KEY})(\s*[=:]\s*)(?!{re.escape(MASK)})"""
            r"""(?:"[^"\n]*"|'[^'\n]*'|[^\s&;,"'<>]+)""",
            re.I,
        ),
        rf"\1\2{MASK}",
    ),
)


def redact(text: str) -> str:
    """`text` with tokens, passwords and other credentials replaced by ``[REDACTED]``."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def redact_bytes(data: bytes) -> bytes:
    """`redact` for attachment bodies; undecodable bytes survive unchanged around secrets."""
    return redact(data.decode("utf-8", errors="surrogateescape")).encode(
        "utf-8", errors="surrogateescape"
    )


class RedactingFilter(logging.Filter):
    """A logging filter that redacts each record's message before any handler formats it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            # Freeze the formatted message: args re-applied later could reintroduce a secret.
            record.msg, record.args = cleaned, None
        return True
