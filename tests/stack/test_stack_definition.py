"""Static promises of the stack definition: every setting read, every service hardened."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import COMPOSE_FILE, ENV_FILE, STACK_DIR, TOPOLOGIES, read_env_file

# Keys consumed outside the Python services (by an image's entrypoint or command).
CONSUMED_BY_IMAGES = {
    "POSTGRES_DB",
    "POSTGRES_USER",
    "POSTGRES_PASSWORD",
    "REDIS_MAXMEMORY",
    "REDIS_MAXMEMORY_POLICY",
}


def _sources() -> str:
    files = [*STACK_DIR.joinpath("services").rglob("*.py"), *STACK_DIR.joinpath("images").iterdir()]
    return "\n".join(f.read_text() for f in files if f.is_file())


@pytest.mark.parametrize("key", sorted(read_env_file()))
def test_every_env_staging_key_is_read_by_code(key):
    sources = _sources()
    # A literal read of the key (os.environ / env helper / shell expansion), not a comment.
    assert re.search(rf"""["'$]{{?{key}\b""", sources), (
        f"{key} is set in {ENV_FILE.name} but no service or image reads it"
    )
    if key in CONSUMED_BY_IMAGES:
        assert (
            key
            in STACK_DIR.joinpath("images")
            .joinpath(
                "postgres-entrypoint.sh" if key.startswith("POSTGRES") else "redis.Dockerfile"
            )
            .read_text()
        )


def _config(*overrides: Path, env: dict[str, str] | None = None) -> dict:
    files = [a for f in (COMPOSE_FILE, *overrides) for a in ("-f", str(f))]
    result = subprocess.run(
        ["docker", "compose", *files, "config", "--format", "json"],
        capture_output=True,
        check=True,
        env={"PATH": "/usr/bin:/usr/local/bin:/bin", **(env or {})},
    )
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def compose_config() -> dict:
    return _config()


@pytest.fixture(scope="module")
def two_backends_config() -> dict:
    return _config(*TOPOLOGIES["two_backends"].files)


SERVICES = ["postgres", "redis", "auth", "backend", "frontend", "prometheus"]


@pytest.mark.parametrize("service", SERVICES)
def test_service_is_hardened_and_health_checked(compose_config, service):
    _assert_hardened(compose_config["services"][service])


@pytest.mark.parametrize("service", [*SERVICES, "gateway"])
def test_two_backends_topology_keeps_every_service_hardened(two_backends_config, service):
    _assert_hardened(two_backends_config["services"][service])


def test_two_backends_topology_scales_the_backend_behind_the_gateway(
    compose_config, two_backends_config
):
    services = two_backends_config["services"]
    assert services["backend"]["deploy"]["replicas"] == 2
    gateway = services["gateway"]
    assert gateway["image"] == services["auth"]["image"]  # the app image, no other build
    assert gateway["command"][-2:] == ["-m", "apex_gateway"]
    assert "user" not in gateway  # the image's non-root user
    assert [p["target"] for p in gateway["ports"]] == [8000]
    assert all("published" not in p for p in gateway["ports"])  # ephemeral host port
    # Everything else is the base stack unchanged.
    for name, spec in compose_config["services"].items():
        merged = services[name]
        if name == "backend":
            deploy = {k: v for k, v in merged["deploy"].items() if k != "replicas"}
            merged = {**merged, "deploy": deploy}
        assert merged == spec, name


def _assert_hardened(spec: dict) -> None:
    assert spec["healthcheck"]["test"], "no health check"
    limits = spec["deploy"]["resources"]["limits"]
    assert float(limits["cpus"]) > 0
    assert int(limits["memory"]) > 0
    for port in spec["ports"]:
        assert port["host_ip"] == "127.0.0.1", port
    for name, dependency in spec.get("depends_on", {}).items():
        # A one-shot job (migrate) is waited for until it exited 0; a service until healthy.
        wanted = "service_completed_successfully" if name in JOBS else "service_healthy"
        assert dependency["condition"] == wanted, name
    assert list(spec["networks"]) == ["apex"]


JOBS = ["migrate"]


@pytest.mark.parametrize("config", ["compose_config", "two_backends_config"])
def test_migrate_is_a_limited_one_shot_job_the_app_services_wait_for(request, config):
    services = request.getfixturevalue(config)["services"]
    job = services["migrate"]
    assert job["image"] == services["auth"]["image"]  # the app image, no other build
    assert job["command"][-2:] == ["-m", "apex_migrations"]
    assert job["restart"] == "no"
    assert job["healthcheck"] == {"disable": True}  # done is its exit code, not a health
    assert "ports" not in job
    assert "user" not in job
    assert job["environment"]["APEX_DB_REVISION"] == "0001_baseline"  # release v1's
    assert {k: v["condition"] for k, v in job["depends_on"].items()} == {
        "postgres": "service_healthy"
    }
    limits = job["deploy"]["resources"]["limits"]
    assert float(limits["cpus"]) > 0
    assert int(limits["memory"]) > 0
    assert list(job["networks"]) == ["apex"]
    for service in ("auth", "backend"):
        assert services[service]["depends_on"]["migrate"]["condition"] == (
            "service_completed_successfully"
        )


def test_tester_is_an_unprivileged_one_shot_job_only_its_profile_starts():
    """The `tester` profile: absent from the stack `up` starts, a limited job with no port
    on the stack network, as an unprivileged uid, writing to the mounted output folder."""
    assert "tester" not in _config()["services"]  # `up` without the profile never starts it
    spec = _config(env={"COMPOSE_PROFILES": "tester"})["services"]["tester"]
    assert spec["profiles"] == ["tester"]
    assert spec["image"] == "apex-stack/tester:staging"  # tagged like the app image
    assert spec["build"] == {"context": str(STACK_DIR / ".tester"), "dockerfile": "Dockerfile"}
    assert spec["user"] == "10004"
    assert spec["healthcheck"] == {"disable": True}  # done is its exit code, not a health
    assert "ports" not in spec
    assert "depends_on" not in spec  # it joins a running stack; it starts none of it
    assert [(v["source"], v["target"]) for v in spec["volumes"]] == [
        (str(STACK_DIR / ".apex-tester"), "/out")
    ]
    limits = spec["deploy"]["resources"]["limits"]
    assert float(limits["cpus"]) > 0
    assert int(limits["memory"]) > 0
    assert list(spec["networks"]) == ["apex"]
    moved = _config(env={"COMPOSE_PROFILES": "tester", "APEX_TESTER_OUT": "/tmp/verdict"})
    assert moved["services"]["tester"]["volumes"][0]["source"] == "/tmp/verdict"


def test_images_run_as_non_root():
    for dockerfile in STACK_DIR.joinpath("images").glob("*.Dockerfile"):
        users = re.findall(r"^USER\s+(\S+)", dockerfile.read_text(), re.M)
        assert users, f"{dockerfile.name} sets no USER"
        assert users[-1] not in ("root", "0"), dockerfile.name


@pytest.mark.parametrize("release", ["v1", "v2"])
def test_the_backend_release_picks_its_image_built_from_the_app_dockerfile(release):
    services = _config(env={"APEX_BACKEND_RELEASE": release})["services"]
    backend, app = services["backend"], services["auth"]
    assert backend["image"] == f"apex-stack/backend:staging-{release}"
    assert backend["build"] == {**app["build"], "args": {"APEX_RELEASE": release}}
    for service in ("migrate", "auth"):  # the other app services keep the app image
        assert services[service]["image"] == "apex-stack/app:staging"


def test_the_two_backends_replicas_run_the_backend_release_image():
    services = _config(*TOPOLOGIES["two_backends"].files, env={"APEX_BACKEND_RELEASE": "v2"})[
        "services"
    ]
    assert services["backend"]["image"] == "apex-stack/backend:staging-v2"
    assert services["gateway"]["image"] == "apex-stack/app:staging"


def test_the_release_is_the_dockerfiles_last_instruction():
    """So v1 and v2 share every layer before it: an upgrade or a rollback changes one
    setting, and building v2 after v1 costs a cached build."""
    dockerfile = STACK_DIR / "images" / "python-service.Dockerfile"
    instructions = [
        line.split()[0]
        for line in dockerfile.read_text().splitlines()
        if line.strip() and not line.startswith((" ", "#"))
    ]
    lines = [
        line for line in dockerfile.read_text().splitlines() if line.startswith(("ARG", "ENV"))
    ]
    assert instructions[-2:] == ["ARG", "ENV"]
    assert lines[-2:] == ["ARG APEX_RELEASE=v1", "ENV APEX_RELEASE=${APEX_RELEASE}"]


def test_prometheus_runs_this_checkouts_config_and_rules(compose_config):
    """Tagged like the app image (it carries this checkout's rules), on the loopback port
    9090, waiting for no service (a backend not up yet is a target DNS has not found yet)."""
    spec = compose_config["services"]["prometheus"]
    assert spec["image"] == "apex-stack/prometheus:staging"
    assert [p["target"] for p in spec["ports"]] == [9090]
    assert all("published" not in p for p in spec["ports"])  # ephemeral host port
    assert "depends_on" not in spec
    assert spec["healthcheck"]["test"] == ["CMD", "/usr/local/bin/prometheus-ready"]
    dockerfile = Path(spec["build"]["context"], spec["build"]["dockerfile"]).read_text()
    assert "COPY prometheus/prometheus.yml /etc/prometheus/prometheus.yml" in dockerfile
    assert "COPY prometheus/rules /etc/prometheus/rules" in dockerfile
    assert "--config.file=/etc/prometheus/prometheus.yml" in dockerfile
