"""Building connection URLs from parts, quoted so that any password survives."""

from __future__ import annotations

from urllib.parse import quote


def postgres_dsn(host: str, user: str, password: str, database: str) -> str:
    """``postgresql://user:password@host/database`` with user, password and database quoted.

    A password with ``@``, ``:``, ``/``, ``%`` or ``#`` would otherwise change where the URL
    points (or fail to parse); `host` is ``host:port`` as published and is not quoted.
    """
    return (
        f"postgresql://{quote(user, safe='')}:{quote(password, safe='')}@{host}/"
        f"{quote(database, safe='')}"
    )
