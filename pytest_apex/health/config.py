"""Configuration in effect: what the running backend really uses, against what was promised.

The staging report promised settings (`.env.staging`) that the original backend never read.
Reading the file again proves nothing, so the values here come from the running process
(`GET /health/config`, built from the live pool and WebSocket manager) and from Redis itself;
the promised values are plain data a project can override.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Final

Setting = float | int | bool | str

# Units shown in criteria; settings not listed are unitless counts or flags.
UNITS: Final[Mapping[str, str]] = {
    "db_pool_timeout_s": "s",
    "db_pool_recycle_s": "s",
    "ws_heartbeat_s": "s",
    "ws_connection_timeout_s": "s",
    "ws_max_connections_per_user": "connections",
    "ws_max_message_bytes": "B",
    "ws_rate_limit_per_minute": "msgs/min",
    "db_pool_size": "connections",
    "db_max_overflow": "connections",
    "max_concurrent_requests": "runs",
    "redis_maxmemory_bytes": "B",
}


@dataclass(frozen=True)
class PromisedConfig:
    """The settings the staging report promises (reference §2, `.env.staging`).

    Override the `apex_expected_config` fixture with ``PromisedConfig(db_pool_size=10, ...)``
    when a deployment is meant to differ. `redis_*` are checked against Redis itself.
    """

    db_pool_size: int = 20
    db_max_overflow: int = 30
    db_pool_timeout_s: float = 30.0
    db_pool_recycle_s: float = 1800.0
    ws_heartbeat_s: float = 30.0
    ws_connection_timeout_s: float = 900.0
    ws_max_connections_per_user: int = 3
    ws_max_message_bytes: int = 8192
    ws_rate_limit_per_minute: int = 100
    max_concurrent_requests: int = 200
    request_isolation: bool = True
    agent_cleanup: bool = True
    cors_allowed_origin: str = "http://localhost:3000"
    redis_maxmemory_bytes: int = 500 * 1024 * 1024  # Redis reads "500mb" as MiB
    redis_maxmemory_policy: str = "allkeys-lru"

    def backend_settings(self) -> dict[str, Setting]:
        """The promised settings the backend reports (everything but Redis's own)."""
        return {
            f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("redis_")
        }


def _dig(body: Mapping[str, Any], path: str) -> Any:
    value: Any = body
    for key in path.split("."):
        if not isinstance(value, Mapping) or key not in value:
            return None
        value = value[key]
    return value


# Setting -> where the reference backend's `GET /health/config` reports it. The base pool
# size is the pool's configured minimum, not its current size, which grows under load.
_BACKEND_PATHS: Final[Mapping[str, str]] = {
    "db_pool_size": "database.pool_min_size",
    "db_pool_timeout_s": "database.acquire_timeout_seconds",
    "db_pool_recycle_s": "database.recycle_seconds",
    "ws_heartbeat_s": "websocket.heartbeat_seconds",
    "ws_connection_timeout_s": "websocket.connection_timeout_seconds",
    "ws_max_connections_per_user": "websocket.max_connections_per_user",
    "ws_max_message_bytes": "websocket.max_message_bytes",
    "ws_rate_limit_per_minute": "websocket.rate_limit_per_minute",
    "max_concurrent_requests": "isolation.max_concurrent_requests",
    # The effective flag (what the agent factory does), not the raw setting beside it.
    "request_isolation": "isolation.request_isolation",
    "agent_cleanup": "isolation.agent_cleanup_enabled",
    "cors_allowed_origin": "http.cors_allowed_origin",
}


def backend_config_in_effect(body: Mapping[str, Any]) -> dict[str, Setting | None]:
    """Flatten the backend's `/health/config` answer into `PromisedConfig`'s names.

    A setting the backend does not report is None, so it fails its check instead of
    silently passing.
    """
    observed: dict[str, Setting | None] = {
        name: _dig(body, path) for name, path in _BACKEND_PATHS.items()
    }
    # Overflow is not a pool property of its own: it is how far the pool may grow past its
    # base size (SQLAlchemy's max_overflow; asyncpg's max_size - min_size).
    low, high = _dig(body, "database.pool_min_size"), _dig(body, "database.pool_max_size")
    overflow = high - low if isinstance(low, int) and isinstance(high, int) else None
    observed["db_max_overflow"] = overflow
    return observed


@dataclass(frozen=True)
class SettingComparison:
    """One promised setting against the value in effect, as numbers a criterion can hold."""

    name: str
    expected: Setting
    observed: Setting | None

    @property
    def unit(self) -> str:
        return UNITS.get(self.name, "")

    def as_numbers(self) -> tuple[float, float]:
        """(observed, threshold) for an ``==`` criterion.

        Numbers compare as themselves; flags and strings as 1 when they match and 0 when
        not (threshold 1), and a missing value as NaN, which never passes.
        """
        expected, observed = self.expected, self.observed
        if isinstance(expected, int | float) and not isinstance(expected, bool):
            # Ints stay ints, so the criterion reads "20 == 20", not "20.0 == 20.0".
            if isinstance(observed, int | float) and not isinstance(observed, bool):
                return _whole(observed), _whole(expected)
            return float("nan"), expected
        if observed is None:
            return float("nan"), 1
        return (1 if observed == expected else 0), 1

    def describe(self) -> str:
        shown = "not reported" if self.observed is None else repr(self.observed)
        return f"{self.name}: expected {self.expected!r}, in effect {shown}"


def _whole(value: float) -> float:
    # 30.0 seconds from one side and 30 from the other should read "30 == 30".
    return int(value) if float(value).is_integer() else value


def compare(
    expected: Mapping[str, Setting], observed: Mapping[str, Setting | None]
) -> list[SettingComparison]:
    return [SettingComparison(name, value, observed.get(name)) for name, value in expected.items()]
