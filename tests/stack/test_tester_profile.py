"""The `tester` profile: the health suite run inside the stack network, by the services'
network names, gives the verdict a run from the host gives.

The tester joins the fault stack's compose project (`docker compose run --rm`, the command
fixtures/stack/README.md documents) with its verdict folder mounted from a tmp dir; then the
same suite runs from the host against the same stack, through its published ports. Both are
external targets (--apex-url), so the checks that need Docker (containers non-root, limited,
published on loopback) skip in both: the tester gets no Docker socket, which would make it
root on the host. The image is brought up to date with this checkout first (`setup.sh
tester`, cached: well under a second when nothing changed).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Final

import pytest

from tests.conftest import COMPOSE_FILE, ENV_FILE, ROOT, FaultStack, read_env_file
from tests.proofs.conftest import HEALTH_SUITE, failed_criteria, run_suite
from tests.report_schema import assert_valid_report

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("fault-stack")]

TESTER_TIMEOUT_S: Final = 600.0
# What only the host run has, and why: the tester image carries no Chromium (nor Playwright),
# so it deselects the real-browser test (its default command, -k "not real_browser").
HOST_ONLY_PREFIXES: Final = ("browser.",)


def _ensure_tester_image() -> None:
    started = time.monotonic()
    result = subprocess.run(
        [str(ROOT / "scripts" / "setup.sh"), "tester"],
        capture_output=True,
        text=True,
        timeout=TESTER_TIMEOUT_S,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    print(f"[tester] setup.sh tester: {time.monotonic() - started:.1f} s", flush=True)


def _run_tester(project: str, out: Path) -> subprocess.CompletedProcess[str]:
    """`docker compose ... --profile tester run --rm tester` in the stack's project."""
    # The folder is the tester's to write in, whichever uid it runs as (10004 by default).
    out.mkdir()
    out.chmod(0o777)
    env = {**os.environ, "APEX_TESTER_OUT": str(out)}
    if os.getuid() != 0:  # its files then belong to whoever runs this test
        env["APEX_TESTER_UID"] = str(os.getuid())
    command = [
        "docker",
        "compose",
        "--project-name",
        project,
        "-f",
        str(COMPOSE_FILE),
        "--env-file",
        str(ENV_FILE),
        "--profile",
        "tester",
        "run",
        "--rm",
        "tester",
    ]
    started = time.monotonic()
    result = subprocess.run(
        command, capture_output=True, text=True, env=env, timeout=TESTER_TIMEOUT_S
    )
    print(f"[tester] compose run: {time.monotonic() - started:.1f} s", flush=True)
    return result


def test_the_tester_profile_gives_the_hosts_verdict_from_inside_the_network(
    pytester: pytest.Pytester, fault_stack: FaultStack, tmp_path: Path
) -> None:
    urls = fault_stack.suite_urls()  # the clean stack
    _ensure_tester_image()
    out = tmp_path / "out"
    tester = _run_tester(fault_stack.target.project, out)
    output = tester.stdout + tester.stderr
    report_file = out / "report.json"
    assert report_file.is_file(), f"no verdict from the tester ({tester.returncode}):\n{output}"
    network = assert_valid_report(json.loads(report_file.read_text(encoding="utf-8")))
    assert tester.returncode == 0, output
    assert network["verdict"] == "pass", failed_criteria(network)
    assert any((out / "allure-results").glob("*-result.json")), "no Allure results in /out"
    # Secrets stay out of what the tester prints and writes.
    secrets = {k: v for k, v in read_env_file().items() if k in ("POSTGRES_PASSWORD", "JWT_SECRET")}
    written = [output, *(p.read_text(errors="replace") for p in out.rglob("*") if p.is_file())]
    for key, secret in secrets.items():
        assert not any(secret in text for text in written), f"{key} leaked into the tester's output"

    _, host = run_suite(pytester, HEALTH_SUITE, urls, ["-m", "health"])

    host_names = {c["name"] for c in host["criteria"]}
    network_names = {c["name"] for c in network["criteria"]}
    host_only = {n for n in host_names if n.startswith(HOST_ONLY_PREFIXES)}
    assert host_only, "the host run judged no browser criterion: is it the full health suite?"
    assert network_names == host_names - host_only, (
        f"only from the host: {sorted(host_names - host_only - network_names)}; "
        f"only from the network: {sorted(network_names - host_names)}"
    )
    assert len(network_names) >= 10, network_names
