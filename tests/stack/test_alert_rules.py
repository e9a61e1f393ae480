"""The reference stack's Prometheus config and alert rules (fixtures/stack/prometheus/).

No Docker and no Prometheus server: `promtool` (Debian's prometheus package, installed by
`scripts/setup.sh prometheus`) checks the config and the rules and runs the rules' unit
tests on synthetic series. The rest reads the YAML: every alert has a firing and a silent
test case, maps to the decision matrix, uses the thresholds catalogue's numbers, and the
config scrapes exactly the services that serve metrics (the staging report's config named
rule files, an alertmanager and an exporter that did not exist: reference §1).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from pytest_apex.rollback.matrix import DecisionMatrix
from pytest_apex.settings.thresholds import THRESHOLDS
from tests.conftest import COMPOSE_FILE, ROOT, STACK_DIR

PROMETHEUS_DIR = STACK_DIR / "prometheus"
CONFIG = PROMETHEUS_DIR / "prometheus.yml"
RULES = PROMETHEUS_DIR / "rules" / "apex.rules.yml"
RULE_TESTS = PROMETHEUS_DIR / "rules" / "apex.rules.test.yml"
APP_DESCRIPTION = ROOT / "pytest_apex" / "reference" / "app.toml"

# Each post-rollback alert and the catalogue's threshold and window it enforces (reference
# §2): the number its expression compares with, and its `for:`.
CATALOGUE = {
    "ApexLatencyP95High": ("rollback_p95_s_max", "rollback_p95_window_s"),
    "ApexErrorRateHigh": ("rollback_error_rate_max", "rollback_error_window_s"),
    "ApexMemoryHigh": ("rollback_memory_ratio_max", "rollback_memory_window_s"),
    "ApexDatabaseConnectionsHigh": ("rollback_connections_max", "rollback_connections_window_s"),
    "ApexMemoryLeak": ("memory_slope_kb_per_h_max", None),
}
# The procedure's rollback triggers (reference §2), which the catalogue does not hold:
# services unhealthy > 5 min, errors > 5 % for > 10 min, any isolation failure.
TRIGGERS = {
    "ApexServiceDown": (0.0, 300.0),
    "ApexBackendMissing": (None, 300.0),
    "ApexErrorRateRollback": (0.05, 600.0),
    "ApexIsolationViolation": (0.0, 0.0),
}
_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
_COMPARED_WITH = re.compile(r"(?:>|==)\s*([0-9.eE+-]+)\s*$")


def _promtool() -> str:
    path = shutil.which("promtool")
    if path:
        return path
    reason = "promtool not installed (scripts/setup.sh prometheus installs Debian's prometheus)"
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; in CI it must be there")
    pytest.skip(reason)


def _run(*args: str, cwd: Path = PROMETHEUS_DIR) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def _load(path: Path) -> Any:
    with path.open() as f:
        return yaml.safe_load(f)


def _alerts() -> dict[str, dict[str, Any]]:
    rules = [rule for group in _load(RULES)["groups"] for rule in group["rules"]]
    alerts = [rule for rule in rules if "alert" in rule]
    names = [rule["alert"] for rule in alerts]
    assert len(names) == len(set(names)), f"alert names repeat: {sorted(names)}"
    return {rule["alert"]: rule for rule in alerts}


def _seconds(duration: str) -> float:
    match = _DURATION.match(duration)
    assert duration, "an empty duration"
    assert match, f"unexpected duration {duration!r}"
    hours, minutes, seconds = (int(part or 0) for part in match.groups())
    return hours * 3600.0 + minutes * 60.0 + seconds


# ----------------------------------------------------------------------------- promtool


def test_config_passes_promtool_check_config():
    result = _run("check", "config", CONFIG.name)
    assert result.returncode == 0, result.stdout + result.stderr
    # check config also reads the rule files it names: they must exist and parse.
    assert "apex.rules.yml" in result.stdout + result.stderr


def test_rules_pass_promtool_check_rules():
    result = _run("check", "rules", str(RULES.relative_to(PROMETHEUS_DIR)))
    assert result.returncode == 0, result.stdout + result.stderr


def test_rules_unit_tests_pass():
    result = _run("test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_promtool_catches_a_wrong_expectation(tmp_path):
    """The unit tests can fail: the same case with a threshold it does not meet fails."""
    rules = tmp_path / "apex.rules.yml"
    rules.write_text(RULES.read_text())
    broken = _load(RULE_TESTS)
    case = next(t for t in broken["tests"] if t["name"].startswith("1 % errors"))
    # 1 % errors: claim the 2 % threshold fires.
    case["alert_rule_test"] = [
        {
            "eval_time": "19m",
            "alertname": "ApexErrorRateHigh",
            "exp_alerts": [{"exp_labels": {"severity": "high"}}],
        }
    ]
    broken["tests"] = [case]
    (tmp_path / "broken.test.yml").write_text(yaml.safe_dump(broken))
    result = _run("test", "rules", "broken.test.yml", cwd=tmp_path)
    assert result.returncode != 0, result.stdout + result.stderr
    assert "ApexErrorRateHigh" in result.stdout + result.stderr


# ----------------------------------------------------------------------------- coverage


def test_every_alert_has_a_firing_and_a_silent_case():
    firing: set[str] = set()
    silent: set[str] = set()
    for case in _load(RULE_TESTS)["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    alerts = set(_alerts())
    assert alerts - firing == set(), "alerts without a test case where they fire"
    assert alerts - silent == set(), "alerts without a test case where they stay silent"
    assert (firing | silent) - alerts == set(), "test cases for alerts that do not exist"


def test_rule_tests_load_the_rules_file():
    assert _load(RULE_TESTS)["rule_files"] == [RULES.name]


# ----------------------------------------------------------------------------- meaning


@pytest.mark.parametrize("name", sorted(_alerts()))
def test_alert_maps_to_the_decision_matrix(name):
    rule = _alerts()[name]
    labels, annotations = rule["labels"], rule["annotations"]
    issue = DecisionMatrix.default().issue(labels["issue"])
    assert labels["severity"] == issue.severity, (
        f"{name}: severity {labels['severity']}, but the decision matrix says "
        f"{labels['issue']} is {issue.severity}"
    )
    assert labels["source"] in ("rollback_trigger", "post_rollback_threshold")
    assert "for" in rule, f"{name} has no for: duration"
    assert annotations.get("summary"), f"{name} has no summary"
    assert annotations.get("description"), f"{name} has no description"
    # The description says what to do: a command or a query to run.
    assert re.search(r"rollback|SELECT|docker compose|rate\(", annotations["description"])


def test_matrix_file_is_the_one_the_rules_name():
    # The severities come from the shipped file, which DecisionMatrix.default() reads.
    shipped = tomllib.loads(
        (ROOT / "pytest_apex" / "rollback" / "decision_matrix.toml").read_text()
    )
    for rule in _alerts().values():
        assert rule["labels"]["issue"] in shipped["issues"]


@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_post_rollback_alert_uses_the_catalogue(name):
    rule = _alerts()[name]
    threshold, window = CATALOGUE[name]
    match = _COMPARED_WITH.search(rule["expr"].strip())
    assert match, f"{name}: no trailing comparison with a number in {rule['expr']!r}"
    assert float(match.group(1)) == pytest.approx(float(THRESHOLDS[threshold].default))
    if window is not None:
        assert _seconds(rule["for"]) == THRESHOLDS[window].default


@pytest.mark.parametrize("name", sorted(TRIGGERS))
def test_rollback_trigger_uses_the_procedure(name):
    rule = _alerts()[name]
    value, window = TRIGGERS[name]
    assert rule["labels"]["source"] == "rollback_trigger"
    assert _seconds(rule["for"]) == window
    if value is not None:
        match = _COMPARED_WITH.search(rule["expr"].strip())
        assert match, f"{name}: no trailing comparison with a number in {rule['expr']!r}"
        assert float(match.group(1)) == value


def test_every_alert_is_known_here():
    assert set(_alerts()) == set(CATALOGUE) | set(TRIGGERS)


# ----------------------------------------------------------------------------- config


def test_config_names_only_what_exists():
    config = _load(CONFIG)
    # No alertmanager runs in the stack: an `alerting:` section would point at nothing.
    assert "alerting" not in config
    for rule_file in config["rule_files"]:
        assert (PROMETHEUS_DIR / rule_file).is_file(), rule_file
    assert config["rule_files"] == [str(RULES.relative_to(PROMETHEUS_DIR))]


def test_config_scrapes_every_service_that_serves_metrics():
    """By compose service name and container port, as the app description gives them."""
    services = tomllib.loads(APP_DESCRIPTION.read_text())["app"]["services"]
    with_metrics = {
        name: (spec["port"], spec["metrics"]["path"])
        for name, spec in services.items()
        if "metrics" in spec
    }
    compose = _load(COMPOSE_FILE)["services"]
    scraped = {}
    for job in _load(CONFIG)["scrape_configs"]:
        if job["job_name"] == "prometheus":
            continue
        for sd in job.get("dns_sd_configs", []):
            for host in sd["names"]:
                scraped[host] = (sd["port"], job.get("metrics_path", "/metrics"))
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, _, port = target.partition(":")
                scraped[host] = (int(port), job.get("metrics_path", "/metrics"))
    assert scraped == with_metrics
    for host in scraped:
        assert host in compose, f"{host} is not a service of {COMPOSE_FILE.name}"


def test_make_setup_installs_promtool():
    """The promtool tests fail under CI unless `make setup` (every default step) installs it."""
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    defaults = re.search(r"\|\| steps=\(([^)]*)\)", setup)
    assert defaults, "no default step list in scripts/setup.sh"
    assert "prometheus" in defaults.group(1).split()
    assert "apt_install --no-install-recommends prometheus" in setup
