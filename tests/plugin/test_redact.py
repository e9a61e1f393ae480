"""Credentials never reach reports, attachments or logs."""

from __future__ import annotations

import logging

import pytest

from pytest_apex.redaction import MASK, RedactingFilter, redact, redact_bytes
from tests.plugin.conftest import ApexPytester

JWT = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1c2VyLTEifQ.c2lnbmF0dXJlLWJ5dGVz"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            f'{{"access_token": "{JWT}", "refresh_token": "r-1234", "expires_in": 900}}',
            f'{{"access_token": "{MASK}", "refresh_token": "{MASK}", "expires_in": 900}}',
        ),
        (
            '{"email": "a@b.c", "password": "hunter2"}',
            f'{{"email": "a@b.c", "password": "{MASK}"}}',
        ),
        ('{"password":"with \\"quotes\\" inside"}', f'{{"password":"{MASK}"}}'),
        ("{'password': 'hunter2'}", f"{{'password': '{MASK}'}}"),
        ("Authorization: Bearer opaque-token-123", f"Authorization: Bearer {MASK}"),
        ("curl -H 'authorization: bearer abcdefgh12'", f"curl -H 'authorization: bearer {MASK}'"),
        ("Authorization: Basic dXNlcjpwYXNz", f"Authorization: Basic {MASK}"),
        (f"token {JWT} expired", f"token {MASK} expired"),
        (
            "GET /login?user=bob&password=hunter2&next=/",
            f"GET /login?user=bob&password={MASK}&next=/",
        ),
        ("POSTGRES_PASSWORD=hunter2", f"POSTGRES_PASSWORD={MASK}"),
        ("JWT_SECRET=abc123 other=1", f"JWT_SECRET={MASK} other=1"),
        ('password: "two words"', f"password: {MASK}"),
        ("postgresql://apex:hunter2@db:5432/apex", f"postgresql://apex:{MASK}@db:5432/apex"),
        (
            "Sec-WebSocket-Protocol: jwt.ZXlKaGJHY2lPaUpJVXpJMU5pSjk",
            f"Sec-WebSocket-Protocol: jwt.{MASK}",
        ),
    ],
)
def test_secrets_are_redacted(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "GET /health 200 in 3 ms",
        "Basic health check passed",
        "user=bob status=ok",
        "http://127.0.0.1:8000/health",
        "load p95 2.41 s >= 2.00 s at 150 users (stage 5/5)",
    ],
)
def test_ordinary_text_is_untouched(text: str) -> None:
    assert redact(text) == text


def test_redaction_is_idempotent() -> None:
    once = redact(f"Authorization: Bearer {JWT} password=x")
    assert redact(once) == once


def test_bytes_keep_undecodable_content() -> None:
    assert redact_bytes(b"\xff\xfe password=hunter2") == b"\xff\xfe password=" + MASK.encode()


def test_logging_filter_redacts_formatted_records() -> None:
    record = logging.LogRecord(
        "apex", logging.INFO, __file__, 1, "login %s", (f"Bearer {JWT}",), None
    )
    assert RedactingFilter().filter(record)
    assert record.getMessage() == f"login Bearer {MASK}"


def test_reports_and_logs_of_a_run_are_redacted(apex: ApexPytester) -> None:
    apex.pytester.makepyfile(
        f"""
        import logging

        def test_leaky():
            print("token {JWT}")
            logging.getLogger("apex").warning("login password=hunter2")
            assert False, "Authorization: Bearer opaque-token-123"
        """
    )
    result = apex.run("-rA", "--log-level=INFO", "--log-file=run.log")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    for secret in (JWT, "hunter2", "opaque-token-123"):
        assert secret not in out
        assert secret not in (apex.path / "run.log").read_text()
    assert f"token {MASK}" in out
    assert f"password={MASK}" in out


def test_skip_reasons_are_redacted_and_keep_their_shape(apex: ApexPytester) -> None:
    apex.pytester.makepyfile(
        """
        import pytest

        def test_skipped():
            pytest.skip("no access with password=hunter2")
        """
    )
    result = apex.run("-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["SKIPPED [[]1[]] *: no access with password=[[]REDACTED[]]"])
