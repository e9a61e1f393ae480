"""The data-layer check: agent instances recorded under more than one user of a run.

The reference stack's `isolation_violations` view lists every agent instance seen under
two or more users. Only the rows touching the given users count, so an earlier run's
traces (another test, another fault) never fail this one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import asyncpg

VIOLATIONS_OF_USERS_QUERY: Final = (
    "SELECT agent_instance_id::text AS agent_instance_id, user_count, run_count, "
    "user_ids::text[] AS user_ids FROM isolation_violations "
    "WHERE user_ids && $1::uuid[] ORDER BY user_count DESC"
)
_CONNECT_TIMEOUT_S: Final = 10.0
_QUERY_TIMEOUT_S: Final = 30.0


class DatabaseUnreachable(RuntimeError):
    """The query could not run: the database refused, dropped or timed out (its words)."""


async def violations_of_users(dsn: str, user_ids: Sequence[str]) -> list[dict[str, Any]]:
    """Rows of `isolation_violations` whose users include any of `user_ids`."""
    try:
        conn = await asyncpg.connect(dsn, timeout=_CONNECT_TIMEOUT_S)
        try:
            rows = await conn.fetch(
                VIOLATIONS_OF_USERS_QUERY, list(user_ids), timeout=_QUERY_TIMEOUT_S
            )
        finally:
            await conn.close()
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        # The DSN itself is never quoted: it holds the password.
        raise DatabaseUnreachable(f"{type(exc).__name__}: {exc}"[:300]) from exc
    return [dict(row) for row in rows]
