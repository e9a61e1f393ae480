"""The data layer as the services see it: schema, the isolation-violation query, Redis memory.

These talk to PostgreSQL and Redis directly (asyncpg, redis-py), with the DSN/URL the
target gives; they read, never write.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import asyncpg
import redis.asyncio as aioredis

# What fixtures/stack/db/init.sql creates: the tables the services write and the view that
# is the direct isolation check.
INIT_SCHEMA: Final[frozenset[str]] = frozenset(
    {
        "users",
        "sessions",
        "threads",
        "messages",
        "agent_executions",
        "request_metrics",
        "isolation_violations",
    }
)

ISOLATION_VIOLATIONS_QUERY: Final = "SELECT * FROM isolation_violations"

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


async def isolation_violations(
    dsn: str, query: str = ISOLATION_VIOLATIONS_QUERY
) -> list[dict[str, Any]]:
    """Every row of the isolation-violation query: each is one agent instance seen under
    more than one user. Raises asyncpg errors when the query cannot run (a missing view
    is a failure, not an empty result)."""
    conn = await asyncpg.connect(dsn, timeout=_CONNECT_TIMEOUT_S)
    try:
        rows = await conn.fetch(query)
    finally:
        await conn.close()
    return [dict(row) for row in rows]


@dataclass(frozen=True)
class RedisMemory:
    maxmemory_bytes: int
    policy: str


async def redis_memory(url: str) -> RedisMemory:
    """Redis's own `maxmemory` and `maxmemory-policy` (CONFIG GET), as it runs now."""
    client = aioredis.from_url(url, socket_timeout=_CONNECT_TIMEOUT_S, decode_responses=True)
    try:
        config = await client.config_get("maxmemory*")
    finally:
        await client.aclose()
    return RedisMemory(
        maxmemory_bytes=int(config.get("maxmemory", 0)),
        policy=str(config.get("maxmemory-policy", "")),
    )
