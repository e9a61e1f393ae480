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


async def violations_of_users(dsn: str, user_ids: Sequence[str]) -> list[dict[str, Any]]:
    """Rows of `isolation_violations` whose users include any of `user_ids`."""
    conn = await asyncpg.connect(dsn, timeout=_CONNECT_TIMEOUT_S)
    try:
        rows = await conn.fetch(VIOLATIONS_OF_USERS_QUERY, list(user_ids), timeout=_QUERY_TIMEOUT_S)
    finally:
        await conn.close()
    return [dict(row) for row in rows]
