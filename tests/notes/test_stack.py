"""The stack as compose runs it: the one-shot migration, health, and the promised hardening."""

from __future__ import annotations

import re

import pytest

from tests.notes.markers import NOTES_STACK
from tests.notes.stack import NOTES_DIR, NotesStack

pytestmark = NOTES_STACK

LONG_RUNNING = ("db", "identity", "api")


def test_migrate_ran_once_and_exited_zero(notes_stack: NotesStack) -> None:
    migrate = notes_stack.container("migrate")
    assert (migrate.State, migrate.ExitCode) == ("exited", 0)
    stdout, _ = notes_stack.compose.get_logs("migrate")
    assert "schema up to date" in stdout, stdout


@pytest.mark.parametrize("service", LONG_RUNNING)
def test_service_is_healthy_in_this_runs_project(notes_stack: NotesStack, service: str) -> None:
    container = notes_stack.container(service)
    assert container.Health == "healthy", container
    assert container.Project == notes_stack.project


@pytest.fixture(scope="module")
def config(notes_stack: NotesStack) -> dict:
    return notes_stack.compose.get_config()


@pytest.mark.parametrize("service", ["migrate", *LONG_RUNNING])
def test_service_is_limited_private_and_loopback_only(config: dict, service: str) -> None:
    spec = config["services"][service]
    limits = spec["deploy"]["resources"]["limits"]
    assert float(limits["cpus"]) > 0
    assert int(limits["memory"]) > 0
    assert list(spec["networks"]) == ["notes"]
    for port in spec.get("ports", []):
        assert port["host_ip"] == "127.0.0.1", port
        assert not port.get("published"), f"fixed host port {port}"  # ephemeral only
    if service != "migrate":
        assert spec["healthcheck"]["test"], "no health check"


def test_apps_wait_for_the_migration_and_use_the_postgres_database(config: dict) -> None:
    for service in ("identity", "api"):
        spec = config["services"][service]
        assert spec["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert spec["environment"]["PGDATABASE"] == "postgres"
    assert config["services"]["api"]["depends_on"]["identity"]["condition"] == "service_healthy"


def test_images_run_as_non_root() -> None:
    for dockerfile in NOTES_DIR.joinpath("images").glob("*.Dockerfile"):
        users = re.findall(r"^USER\s+(\S+)", dockerfile.read_text(), re.M)
        assert users, f"{dockerfile.name} sets no USER"
        assert users[-1] not in ("root", "0"), dockerfile.name
