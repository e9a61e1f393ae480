"""Facts of the reference stack: fault switches, their environment variable, ports, e-mails."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from pathlib import Path
from types import MappingProxyType
from typing import Final

from pytest_apex.app import AppDescription, find_description, load_description

# The environment variable through which the reference stack's services read their fault
# switches (fixtures/stack/README.md). It is also the environment twin of --apex-faults.
FAULTS_ENV: Final = "APEX_FAULTS"

# Fault switches the reference stack understands. Each one plants a defect a suite must
# catch; see fixtures/stack/README.md.
KNOWN_FAULTS: Final[tuple[str, ...]] = (
    "shared_context",
    "broadcast_events",
    "unscoped_cache",
    "idor",
    "slow_responses",
    "error_burst",
    "memory_leak",
    "unready_db",
    "weak_jwt",
    "open_cors",
    "root_user",
    "slow_redis",
    "late_fanout",
    "error_context",
    "cancel_leak",
    "overflow_shared",
    "preview_leak",
    "page_cache",
    "replica_ids",
)

# Fault switches that are a container property rather than code: each is applied by the
# compose override file faults/<name>.yml next to the reference compose file, together
# with its name in APEX_FAULTS.
CONTAINER_FAULTS: Final[tuple[str, ...]] = ("root_user",)

# Container ports of the reference stack whose published address is not HTTP.
PORT_SCHEMES: Final[Mapping[int, str]] = MappingProxyType({5432: "postgresql", 6379: "redis"})

# Domain of the e-mail addresses the suites sign users up with on the reference stack.
EMAIL_DOMAIN: Final = "apex.test"


@cache
def reference_description() -> AppDescription:
    """The reference stack's app description (``app.toml`` beside this module)."""
    path = Path(__file__).with_name("app.toml")
    data, source = find_description(path.parent, explicit=path)
    return load_description(data, source)
