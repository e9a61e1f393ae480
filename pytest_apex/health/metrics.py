"""Which series a Prometheus `/metrics` page exposes.

The other suites read these series (pool use, live execution contexts, run counters,
resident memory); a renamed metric would otherwise make their gates read "no data".
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

# The series the isolation, load, rollback and soak suites read from the backend.
REQUIRED_SERIES: Final[tuple[str, ...]] = (
    "apex_ws_connections",
    "apex_execution_contexts_live",
    "apex_agent_runs_started_total",
    "apex_agent_runs_completed_total",
    "apex_agent_runs_failed_total",
    "apex_db_pool_in_use",
    "apex_db_pool_size",
    "apex_process_resident_memory_bytes",
    "apex_http_requests_total",
)

_SAMPLE: Final = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{[^}]*\})?\s+\S+")


def exposed_series(text: str) -> set[str]:
    """Names that have at least one sample (a `# TYPE` line alone is not a series)."""
    names = set()
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match:
            names.add(match.group(1))
    return names


def missing_series(text: str, required: Iterable[str] = REQUIRED_SERIES) -> list[str]:
    exposed = exposed_series(text)
    return [name for name in required if name not in exposed]
