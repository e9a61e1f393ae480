"""Reading the rows a rollback must keep, straight from the database (read-only).

Only the drill's own users' rows are read (by their owner column), so the rest of the
database, another test's data, never makes a snapshot slow or a comparison noisy. The
identifiers come from the app description and are quoted, never pasted in bare.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import asyncpg

from pytest_apex.app.model import RowTable
from pytest_apex.isolation.database import DatabaseUnreachable
from pytest_apex.rollback.integrity import Snapshot, TableShape

_CONNECT_TIMEOUT_S: Final = 10.0
_QUERY_TIMEOUT_S: Final = 30.0
# Backends connected to the app's database, the drill's own connection left out.
ACTIVE_CONNECTIONS_QUERY: Final = (
    "SELECT count(*) FROM pg_stat_activity "
    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
)


def quote(identifier: str) -> str:
    """A PostgreSQL identifier, quoted (``"user_id"``)."""
    return '"' + identifier.replace('"', '""') + '"'


def shape_of(table: RowTable) -> TableShape:
    return TableShape(table.name, table.key, table.owner, table.columns)


def select_owned(table: RowTable) -> str:
    """The query for `table`'s rows whose owner is one of ``$1`` (text values)."""
    columns = dict.fromkeys((table.key, table.owner, *table.columns))
    return (
        f"SELECT {', '.join(quote(c) for c in columns)} FROM {quote(table.name)} "
        f"WHERE {quote(table.owner)}::text = ANY($1::text[])"
    )


async def snapshot(dsn: str, tables: Sequence[RowTable], owners: Sequence[str]) -> Snapshot:
    """Every row of `tables` owned by `owners`, by table and key."""
    taken = Snapshot()
    try:
        conn = await asyncpg.connect(dsn, timeout=_CONNECT_TIMEOUT_S)
        try:
            for table in tables:
                rows = await conn.fetch(select_owned(table), list(owners), timeout=_QUERY_TIMEOUT_S)
                taken.add(shape_of(table), (dict(row) for row in rows))
        finally:
            await conn.close()
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        # The DSN itself is never quoted: it holds the password.
        raise DatabaseUnreachable(f"{type(exc).__name__}: {exc}"[:300]) from exc
    return taken


async def active_connections(dsn: str) -> int:
    """How many connections the app's database holds now (the drill's own excepted)."""
    try:
        conn = await asyncpg.connect(dsn, timeout=_CONNECT_TIMEOUT_S)
        try:
            count = await conn.fetchval(ACTIVE_CONNECTIONS_QUERY, timeout=_QUERY_TIMEOUT_S)
        finally:
            await conn.close()
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise DatabaseUnreachable(f"{type(exc).__name__}: {exc}"[:300]) from exc
    return int(count)
