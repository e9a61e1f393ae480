"""The isolation suite's database query, when the database cannot answer."""

from __future__ import annotations

import socket

import pytest

from pytest_apex.isolation.database import DatabaseUnreachable, violations_of_users


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])  # nothing listens once the probe is closed


async def test_a_database_that_refuses_is_unreachable_and_its_password_never_quoted() -> None:
    dsn = f"postgresql://apex:s3cret-pw@127.0.0.1:{_closed_port()}/apex"
    with pytest.raises(DatabaseUnreachable) as raised:
        await violations_of_users(dsn, ["a-user"])
    assert "s3cret-pw" not in str(raised.value)
    assert "ConnectionRefusedError" in str(raised.value) or "OSError" in str(raised.value)
