"""Connection URLs built from parts keep any password intact."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

from pytest_apex.dsn import postgres_dsn


def test_a_password_with_url_delimiters_survives() -> None:
    password = "p@ss:w/rd%#?"
    dsn = postgres_dsn("127.0.0.1:5432", "apex user", password, "apex/db")
    parts = urlsplit(dsn)
    assert parts.hostname == "127.0.0.1"
    assert parts.port == 5432
    assert unquote(parts.username or "") == "apex user"
    assert unquote(parts.password or "") == password
    assert unquote(parts.path.lstrip("/")) == "apex/db"
