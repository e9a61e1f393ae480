"""The data layer as the services see it: schema, the isolation-violation query, Redis memory.

These talk to PostgreSQL and Redis directly (asyncpg, redis-py), with the DSN/URL the
target gives; they read, never write.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final, cast

import asyncpg
import redis.asyncio as aioredis

_CONNECT_TIMEOUT_S: Final = 10.0


async def schema_objects(dsn: str, schema: str = "public") -> set[str]:
    """Names of the tables and views in `schema`."""
    conn = await asyncpg.connect(dsn, timeout=_CONNECT_TIMEOUT_S)
    try:
        rows = await conn.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = $1", schema
        )
    finally:
        await conn.close()
    return {row["table_name"] for row in rows}


async def isolation_violations(dsn: str, query: str) -> list[dict[str, Any]]:
    """Every row of the app's isolation-violation query (each one a violation, e.g. an agent
    instance seen under two users). Raises asyncpg errors when the query cannot run: a
    missing view is a failure, not an empty result."""
    conn = await asyncpg.connect(dsn, timeout=_CONNECT_TIMEOUT_S)
    try:
        rows = await conn.fetch(query)
    finally:
        await conn.close()
    return [dict(row) for row in rows]


async def redis_settings(url: str, names: Iterable[str]) -> dict[str, str]:
    """Redis's own settings as it runs now (CONFIG GET of each name)."""
    client = aioredis.from_url(url, socket_timeout=_CONNECT_TIMEOUT_S, decode_responses=True)
    try:
        found: dict[str, str] = {}
        for name in names:
            # redis types the reply's keys and values as str | None; decoded, they are str.
            found.update(cast(dict[str, str], await client.config_get(name)))
    finally:
        await client.aclose()
    return found
