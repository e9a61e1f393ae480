"""App descriptions: found where a team puts them, validated naming every bad key."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from pytest_apex.app import DescriptionError, find_description, load_description
from pytest_apex.reference import (
    CONTAINER_FAULTS,
    KNOWN_FAULTS,
    PORT_SCHEMES,
    reference_description,
)

MINIMAL: dict[str, Any] = {"name": "notes", "services": {"api": {"role": "api"}}}


def _problems(data: dict[str, Any]) -> str:
    with pytest.raises(DescriptionError) as info:
        load_description(data, "apex.toml")
    return str(info.value)


def test_the_reference_description_reproduces_the_reference_stack() -> None:
    description = reference_description()
    assert set(description.services) == {
        "backend",
        "auth",
        "frontend",
        "postgres",
        "redis",
        "migrate",
        "tester",
    }
    assert description.capabilities.agent_runs
    assert description.faults is not None
    # The fault names the plugin validates --apex-faults against are the description's own.
    assert description.faults.known == KNOWN_FAULTS
    assert tuple(description.faults.files) == CONTAINER_FAULTS
    assert description.port_schemes == PORT_SCHEMES
    backend = description.services["backend"]
    assert backend.readiness is not None
    assert backend.readiness.dependencies == ("postgres", "redis")
    threads = description.resources[0]
    assert (threads.collection, threads.owner_field) == ("/api/threads", "user_id")
    assert threads.sub_resources[0].collection == "/api/threads/{parent_id}/messages"


def test_a_minimal_description_has_no_capabilities_it_did_not_declare() -> None:
    description = load_description(MINIMAL, "apex.toml")
    api = description.services["api"]
    assert (api.liveness, api.readiness, api.websocket, api.metrics) == (None, None, "", None)
    assert description.auth is None
    assert not description.capabilities.agent_runs
    assert description.resources == ()


def test_every_problem_is_reported_at_once_naming_its_key() -> None:
    message = _problems(
        {
            "name": "notes",
            "services": {
                "api": {"role": "apii", "liveness": {"path": "healthz"}},
                "db": {"role": "database", "prot": 5432},
            },
        }
    )
    assert "services.api.role: 'apii' is not accepted (did you mean 'api'?)" in message
    assert "services.api.liveness.path: 'healthz' does not match" in message
    assert "services.db: unknown key 'prot' (did you mean 'port'?)" in message


def test_names_must_refer_to_described_services() -> None:
    message = _problems(
        {
            **MINIMAL,
            "auth": {"login": {"service": "identiy", "path": "/v1/sessions"}},
            "resources": {"notebooks": {"service": "apii", "collection": "/v1/notebooks"}},
        }
    )
    assert "auth.login.service: 'identiy' is not a described service" in message
    assert "resources.notebooks.service: 'apii' is not a described service" in message
    assert "(did you mean 'api'?)" in message


def test_formats_that_cannot_carry_what_was_asked_are_refused() -> None:
    message = _problems(
        {
            "name": "notes",
            "services": {
                "api": {
                    "role": "api",
                    "liveness": {"path": "/healthz", "format": "json-field"},
                    "readiness": {"path": "/readyz", "dependencies": ["db"]},
                },
                "db": {"role": "database"},
            },
            "capabilities": {"agent_runs": True},
        }
    )
    assert "services.api.liveness.field: a json-field health route must name its field" in message
    assert "services.api.readiness.dependencies: only a health+json answer" in message
    assert "capabilities.agent_runs: agent runs stream over a WebSocket" in message


def test_apex_toml_wins_over_pyproject(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[tool.pytest-apex.app]\nname = "from-pyproject"\nservices = { api = { role = "api" } }\n'
    )
    data, source = find_description(tmp_path)
    assert (data["name"], source) == ("from-pyproject", str(tmp_path / "pyproject.toml"))
    (tmp_path / "apex.toml").write_text(
        '[app]\nname = "from-apex-toml"\nservices = { api = { role = "api" } }\n'
    )
    data, source = find_description(tmp_path)
    assert (data["name"], source) == ("from-apex-toml", str(tmp_path / "apex.toml"))


def test_a_project_without_a_description_finds_none(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    assert find_description(tmp_path) == ({}, "")


def test_an_explicit_file_must_hold_a_description(tmp_path: Path) -> None:
    path = tmp_path / "app.toml"
    path.write_text("[other]\nkey = 1\n")
    with pytest.raises(DescriptionError, match=r"holds no app description: expected an \[app\]"):
        find_description(tmp_path, explicit=path)
    path.write_text(textwrap.dedent("[app\nname = 1"))
    with pytest.raises(DescriptionError, match="is not valid TOML"):
        find_description(tmp_path, explicit=path)
    with pytest.raises(DescriptionError, match="does not exist"):
        find_description(tmp_path, explicit=tmp_path / "missing.toml")


# --- topologies -------------------------------------------------------------------------------


def test_the_reference_stack_describes_its_two_backend_topology() -> None:
    description = reference_description()
    topology = description.topologies["two_backends"]
    assert topology.files == ("topologies/two_backends.yml",)
    assert dict(topology.endpoints) == {"backend": "gateway"}
    assert dict(topology.replicated) == {"backend": 2}
    assert (topology.replicas_of("backend"), topology.replicas_of("auth")) == (2, 1)
    liveness = description.services["backend"].liveness
    assert liveness is not None
    assert liveness.instance_field == "instance"


def test_a_topology_is_read_with_its_files_endpoints_and_replicas() -> None:
    description = load_description(
        {
            "name": "notes",
            "services": {
                "api": {
                    "role": "api",
                    "port": 8080,
                    "liveness": {"path": "/healthz", "instance_field": "host.name"},
                },
            },
            "topologies": {
                "scaled": {
                    "files": ["scaled.yml", "lb.yml"],
                    "endpoints": {"api": "lb"},
                    "replicas": {"api": 3},
                },
                "plain": {},
            },
        },
        "apex.toml",
    )
    scaled = description.topologies["scaled"]
    assert (scaled.name, scaled.files, dict(scaled.replicated)) == (
        "scaled",
        ("scaled.yml", "lb.yml"),
        {"api": 3},
    )
    assert dict(description.topologies["plain"].replicated) == {}
    liveness = description.services["api"].liveness
    assert liveness is not None
    assert liveness.instance_field == "host.name"
    assert load_description(MINIMAL, "apex.toml").topologies == {}


def test_a_topology_must_name_described_services_and_known_keys() -> None:
    message = _problems(
        {
            **MINIMAL,
            "topologies": {
                "scaled": {"endpoints": {"apii": "lb"}, "replicas": {"ap": 2}},
            },
        }
    )
    assert "topologies.scaled.endpoints: 'apii' is not a described service" in message
    assert "topologies.scaled.replicas: 'ap' is not a described service" in message
    assert "(did you mean 'api'?)" in message
    message = _problems(
        {
            **MINIMAL,
            "topologies": {
                "scaled": {"replica": {"api": 2}},
                "zero": {"replicas": {"api": 0}},
                "odd": {"files": "scaled.yml"},
            },
        }
    )
    assert "topologies.scaled: unknown key 'replica' (did you mean 'replicas'?)" in message
    assert "topologies.zero.replicas.api: 0 is less than the minimum of 1" in message
    assert "topologies.odd.files: 'scaled.yml' is not of type 'array'" in message


def _api_routes(**routes: dict[str, str]) -> dict[str, Any]:
    return {"name": "notes", "services": {"api": {"role": "api", **routes}}}


def test_only_the_liveness_route_names_the_answering_instance() -> None:
    message = _problems(_api_routes(readiness={"path": "/readyz", "instance_field": "host"}))
    assert (
        "services.api.readiness.instance_field: only the liveness route names the answering "
        "instance" in message
    )
    message = _problems(_api_routes(liveness={"path": "/healthz", "instance_field": ""}))
    assert "services.api.liveness.instance_field: '' should be non-empty" in message
