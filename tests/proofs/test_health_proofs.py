"""The health suite catches what it claims to: it passes on a clean stack and fails, naming
the readiness check and the dependency, when the backend reports PostgreSQL unready."""

from __future__ import annotations

import pytest

from tests.conftest import FaultStack
from tests.proofs.conftest import HEALTH_SUITE, failed_criteria, run_suite

pytestmark = pytest.mark.xdist_group("fault-stack")


def test_health_suite_passes_on_the_clean_stack(
    pytester: pytest.Pytester, fault_stack: FaultStack
) -> None:
    result, report = run_suite(pytester, HEALTH_SUITE, fault_stack.suite_urls(), ["-m", "health"])

    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    assert report["verdict"] == "pass", failed_criteria(report)
    assert len(report["criteria"]) >= 10, report["criteria"]
    names = {c["name"] for c in report["criteria"]}
    # The checks that the unready_db proof relies on ran and passed here.
    assert {"backend.readiness", "backend.readiness.postgres"} <= names


def test_health_suite_fails_on_unready_db_naming_readiness_and_postgres(
    pytester: pytest.Pytester, fault_stack: FaultStack
) -> None:
    result, report = run_suite(
        pytester, HEALTH_SUITE, fault_stack.suite_urls("unready_db"), ["-m", "health"]
    )

    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()
    assert report["verdict"] == "fail"
    failed = {c["name"] for c in failed_criteria(report)}
    assert "backend.readiness.postgres" in failed, failed
    # Precise, not noisy: only readiness failed (liveness still passes, the database itself
    # is fine), for every service whose readiness needs PostgreSQL, and Redis, which did not
    # fail, is not blamed.
    readiness = {f"{s}.readiness{d}" for s in ("backend", "auth") for d in ("", ".postgres")}
    assert failed <= readiness, failed - readiness
    assert result.parseoutcomes()["failed"] == 1, result.stdout.str()
    result.stdout.fnmatch_lines(
        ["*health backend.readiness.postgres 0 != 1: postgres check fail*postgres:responseTime*"]
    )
