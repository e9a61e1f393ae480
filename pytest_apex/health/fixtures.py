"""What the health suite expects of the deployment: read from the app description.

Every expectation (health routes and formats, promised settings, schema objects, metrics
series, where the token signing key is found) is data in the app description, so a team
describes its app rather than editing the suite. Each fixture here is one layer a project
can still override in its conftest.py.

Nothing here reads the files that configure the app (`.env.staging`): the expectation must
come from the promise, not from the file under test, or a wrong file would agree with itself.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import httpx
import pytest

from pytest_apex.app.model import AppDescription, Service
from pytest_apex.health.tokens import SigningKeySource


@pytest.fixture(scope="session")
def apex_health_layout(apex_app: AppDescription) -> Mapping[str, Service]:
    """The described services that answer a health route (liveness, maybe readiness)."""
    return {name: s for name, s in apex_app.services.items() if s.liveness is not None}


@pytest.fixture(scope="session")
def apex_token_key_source(apex_app: AppDescription) -> SigningKeySource | None:
    """Where the target reveals the key its HS* tokens are signed with, for the expired
    token (the description's ``auth.signing_key``; None when it names none)."""
    key = apex_app.auth.signing_key if apex_app.auth else None
    return SigningKeySource(service=key.service, variable=key.env) if key else None


@pytest.fixture(scope="session")
def health_http() -> Iterator[httpx.Client]:
    # One keep-alive client for the whole suite: back-to-back probes then measure the
    # service, not a fresh TCP handshake each. A connection idle for more than a second is
    # not reused: servers close idle ones early (gunicorn after 2 s), and a probe on one the
    # server has just dropped would read as the service not answering.
    limits = httpx.Limits(keepalive_expiry=1.0)
    with httpx.Client(timeout=httpx.Timeout(10.0), limits=limits) as client:
        yield client
