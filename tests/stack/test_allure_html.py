"""The HTML report a newcomer gets from `make staging`: Allure 3 (npm `allure`, no Java) turns
a real run's results into it, and a headless Chromium shows what the README promises.

The run: the health suite's liveness, readiness and response-time tests against the fault
stack with `slow_responses` on, attached to its compose project so failed tests get their
services' logs. The report is generated with the repository's allurerc.mjs, served on
127.0.0.1 and opened with Playwright: the suite is the tree's top level (not a `tests`
folder), the failed criterion's step shows observed, threshold and outcome, the response-time
chart is an image, and a service-log attachment opens. `APEX_REPORT_SCREENSHOT=path` also
writes a screenshot of the failed test's page (docs/allure-report.png).
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest

from pytest_apex.health.browser import CHROMIUM_ARGS, chromium_path
from tests.conftest import ROOT, FaultStack
from tests.proofs.conftest import HEALTH_SUITE, attach_to, run_suite

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("fault-stack")]

SCREENSHOT_ENV: Final = "APEX_REPORT_SCREENSHOT"
GENERATE_TIMEOUT_S: Final = 180.0
PAGE_TIMEOUT_MS: Final = 30_000


def generate_report(results: Path, output: Path) -> subprocess.CompletedProcess[str]:
    """`allure generate` with the repository's allurerc.mjs, as `make report` runs it."""
    npx = shutil.which("npx")
    if npx is None:
        pytest.fail("npx is missing: `make setup` installs Node and the node tools", pytrace=False)
    return subprocess.run(
        [npx, "--no-install", "allure", "generate", str(results), "-o", str(output)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=GENERATE_TIMEOUT_S,
        check=False,
    )


def quality_gate(results: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["npx", "--no-install", "allure", "quality-gate", str(results)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=GENERATE_TIMEOUT_S,
        check=False,
    )


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def serve() -> Iterator[Any]:
    """Serve a directory on 127.0.0.1 (a free port) in a thread; yields a function of the
    directory that returns its base URL."""
    servers: list[http.server.ThreadingHTTPServer] = []

    def start(directory: Path) -> str:
        handler = functools.partial(_QuietHandler, directory=str(directory))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _top_level_groups(report: Path) -> list[str]:
    tree = json.loads((report / "widgets" / "tree.json").read_text(encoding="utf-8"))
    return [tree["groupsById"][group]["name"] for group in tree["root"]["groups"]]


def test_the_html_report_of_a_real_run_shows_suites_criteria_a_chart_and_logs(
    pytester: pytest.Pytester, fault_stack: FaultStack, serve: Any
) -> None:
    from playwright.sync_api import expect, sync_playwright

    results = pytester.path / "allure-results"
    fault_stack.switch("slow_responses")
    try:
        result, verdict = run_suite(
            pytester,
            HEALTH_SUITE,
            {},
            [
                "-m",
                "health",
                "-k",
                "live or ready or answer_within",
                f"--alluredir={results}",
                *attach_to(pytester, fault_stack.target),
            ],
        )
    finally:
        fault_stack.switch()
    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()
    assert verdict["verdict"] == "fail"

    report = pytester.path / "allure-report"
    generated = generate_report(results, report)
    assert generated.returncode == 0, generated.stdout + generated.stderr
    assert (report / "index.html").is_file()
    # The gate mirrors the verdict: a failed run fails it, naming the failed tests.
    gate = quality_gate(results)
    assert gate.returncode != 0, gate.stdout + gate.stderr
    assert "maxFailures" in gate.stdout + gate.stderr
    # The tree's top level is the suite, not the test files' directories.
    assert _top_level_groups(report) == ["health"]

    base = serve(report)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium_path(), args=list(CHROMIUM_ARGS), headless=True
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(PAGE_TIMEOUT_MS)
            page.goto(base + "index.html")
            sections = page.get_by_test_id("tree-section-title")
            expect(sections.first).to_have_text("health")
            titles = [t.strip() for t in sections.all_inner_texts()]
            assert not {"tests", "acceptance"} & set(titles), titles

            # The failed response-time test: its criterion step reads without raw JSON.
            page.get_by_test_id("tree-leaf-title").filter(
                has_text="test_health_endpoints_answer_within_the_threshold"
            ).first.click()
            step = page.get_by_test_id("test-result-step").filter(
                has_text="backend.health_response"
            )
            expect(step.first).to_be_visible()
            body = page.get_by_test_id("test-result-steps-root").first
            for text in ("observed", "threshold", "outcome", "fail", "> 0.500 s"):
                expect(body).to_contain_text(text)
            if os.environ.get(SCREENSHOT_ENV):
                step.first.scroll_into_view_if_needed()
                page.screenshot(path=os.environ[SCREENSHOT_ENV], full_page=False)

            # Its attachments: the response-time chart renders as an image, and the
            # backend's log is there.
            page.get_by_test_id("test-result-tab-attachments").click()
            chart = page.get_by_text("health response times")
            expect(chart.first).to_be_visible()
            chart.first.click()
            image = page.get_by_test_id("image-attachment-content").locator("img")
            expect(image.first).to_be_visible()
            loaded = image.first.evaluate("img => img.complete && img.naturalWidth > 0")
            assert loaded, "the chart image did not load"
            logs = page.get_by_text("backend logs (last 200 lines)")
            expect(logs.first).to_be_visible()
            logs.first.click()
            # The backend's own log lines: it announces the fault switches it runs with.
            expect(page.locator("body")).to_contain_text("FAULT SWITCHES ACTIVE: slow_responses")
        finally:
            browser.close()
