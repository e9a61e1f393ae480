"""What the health suite expects of the deployment, as fixtures a project can override.

The defaults are the staging report's promises for the reference stack. A team whose
deployment is meant to differ overrides one fixture in its own conftest.py, e.g.::

    @pytest.fixture(scope="session")
    def apex_expected_config():
        return PromisedConfig(db_pool_size=10, cors_allowed_origin="https://chat.example.com")

Nothing here reads `.env.staging`: the expectation must come from the promise, not from the
file under test, or a wrong file would agree with itself.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import httpx
import pytest

from pytest_apex.health.config import PromisedConfig
from pytest_apex.health.datastore import INIT_SCHEMA
from pytest_apex.health.metrics import REQUIRED_SERIES
from pytest_apex.health.probes import REFERENCE_HEALTH_LAYOUT, ServiceHealthSpec
from pytest_apex.health.tokens import SigningKeySource


@pytest.fixture(scope="session")
def apex_expected_config() -> PromisedConfig:
    """Settings the running services must use (pool, WebSocket limits, isolation, CORS, Redis)."""
    return PromisedConfig()


@pytest.fixture(scope="session")
def apex_health_layout() -> Mapping[str, ServiceHealthSpec]:
    """Each service's liveness and readiness paths and the dependencies readiness reports."""
    return REFERENCE_HEALTH_LAYOUT


@pytest.fixture(scope="session")
def apex_expected_schema() -> frozenset[str]:
    """Tables and views the database's init schema must have created."""
    return INIT_SCHEMA


@pytest.fixture(scope="session")
def apex_required_series() -> tuple[str, ...]:
    """Prometheus series the other suites read from the backend's `/metrics`."""
    return REQUIRED_SERIES


@pytest.fixture(scope="session")
def apex_token_key_source() -> SigningKeySource:
    """Where the target reveals the secret its HS* tokens are signed with, for the expired
    token: on the reference stack, auth's ``JWT_SECRET`` (the backend shares it)."""
    return SigningKeySource(service="auth", variable="JWT_SECRET")


@pytest.fixture(scope="session")
def health_http() -> Iterator[httpx.Client]:
    # One keep-alive client for the whole suite: health response times then measure the
    # service, not a fresh TCP handshake per probe.
    with httpx.Client(timeout=httpx.Timeout(10.0)) as client:
        yield client
