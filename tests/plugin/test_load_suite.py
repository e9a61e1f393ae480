"""The shipped load suite, run by `pytest -m load` against a small app in its own process:
it passes only with every stage judged, and fails or is inconclusive naming the stage."""

from __future__ import annotations

from typing import Any

import pytest

# Imported here, before any in-process run: such a run forgets the modules it imported
# itself, and a second copy of them (aiohttp's, the engine's) would be imported after it.
import pytest_apex.adapters.apex_load
import pytest_apex.suites.test_load  # noqa: F401
from pytest_apex.exitstatus import INCONCLUSIVE_EXIT
from tests.conftest import ROOT
from tests.plugin.conftest import ApexPytester

# The suite's target layer replaced by the fake app (tests/plugin/fake_load_app.py).
FAKE_LAYERS = """
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.plugin.fake_load_app import description

@pytest.fixture(scope="session")
def fake_url():
    if {url!r}:
        yield {url!r}
        return
    app = subprocess.Popen(
        [sys.executable, "-m", "tests.plugin.fake_load_app", {mode!r}],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        yield app.stdout.readline().strip()  # the app prints its URL once it listens
    finally:
        app.terminate()
        app.wait(10)
        app.stdout.close()

@pytest.fixture(scope="session")
def apex_app():
    return description(agent={agent!r})

@pytest.fixture(scope="session")
def apex_endpoints(fake_url):
    return {{name: fake_url for name in ("api", "auth", "backend")}}
"""

# Two short stages of few users: enough samples for every criterion in about 3 s.
SHORT = (
    "--apex-threshold=load_stages=2,4",
    "--apex-threshold=stage_duration_s=1.5",
    "--apex-threshold=load_think_s=0.02",
    "--apex-threshold=load_window_s=0.5",
    # Three seconds cannot show > 99.9 % (1,000 probes); > 95 % (20) they can.
    "--apex-threshold=availability_min=0.95",
)
# A soak compressed to seconds: memory every 50 ms, judged after the first second.
SOAK = (
    "--apex-threshold=soak_users=4",
    "--apex-threshold=soak_duration_s=5",
    "--apex-threshold=load_think_s=0.02",
    "--apex-threshold=load_window_s=1",
    "--apex-threshold=memory_sample_s=0.05",
    "--apex-threshold=memory_warmup_s=1.5",
    "--apex-threshold=availability_min=0.95",
)


def run_suite(
    apex: ApexPytester,
    mode: str = "clean",
    *args: str,
    agent: bool = False,
    url: str = "",
    subprocess: bool = False,
    marks: str = "load and not soak",
) -> tuple[pytest.RunResult, dict[str, Any]]:
    apex.conftest(FAKE_LAYERS.format(mode=mode, agent=agent, url=url))
    args = ("-m", marks, "-q", "-p", "no:randomly", *args)
    if subprocess:
        result = apex.pytester.runpytest_subprocess(*apex.QUIET, *args, timeout=120)
    else:
        result = apex.run(*args)
    return result, apex.report()


def by_stage(report: dict[str, Any]) -> dict[tuple[str, int], dict[str, Any]]:
    return {(c["name"], c["stage"]["index"]): c for c in report["criteria"] if c["stage"]}


def test_a_clean_app_passes_with_every_stage_in_the_report(apex: ApexPytester) -> None:
    result, report = run_suite(apex, "clean", *SHORT)
    assert result.ret == 0, result.stdout.str()
    assert report["verdict"] == "pass"
    assert report["suites_run"] == ["load"]
    criteria = by_stage(report)
    names = {"success_rate", "error_rate", "p95", "avg_response", "requests_per_s"}
    for stage, users in ((1, 2), (2, 4)):
        for name in names:
            criterion = criteria[(name, stage)]
            assert criterion["outcome"] == "pass", criterion
            assert criterion["stage"] == {"index": stage, "count": 2, "users": users}
        assert criteria[("p95 in every 0.5 s window", stage)]["outcome"] == "pass"
    assert criteria[("requests_per_s", 2)]["observed"] > 50
    availability = next(c for c in report["criteria"] if c["name"] == "availability api")
    assert availability["outcome"] == "pass", availability
    # One progress line per stage reached the terminal, under -q and capture.
    result.stdout.fnmatch_lines(
        [
            "*load stage 1/2 (2 users): 2 users, * req/s, p95 *, 0 errors, 2/2 s",
            "*load stage 2/2 (4 users): 4 users, * req/s, p95 *, 0 errors, 2/2 s",
        ]
    )


def test_a_slow_stage_fails_p95_naming_the_stage(apex: ApexPytester) -> None:
    result, report = run_suite(apex, "slow", *SHORT, "--apex-threshold=p95_s_max=0.1")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    criteria = by_stage(report)
    assert criteria[("p95", 1)]["outcome"] == "pass"
    slow = criteria[("p95", 2)]
    assert slow["outcome"] == "fail"
    assert slow["observed"] >= 0.15
    result.stdout.fnmatch_lines(["*load p95 0.1* s >= 0.100 s at 4 users (stage 2/2)*"])


def test_answers_of_500_fail_the_error_rate(apex: ApexPytester) -> None:
    result, report = run_suite(apex, "errors", *SHORT)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    criteria = by_stage(report)
    for stage in (1, 2):
        assert criteria[("error_rate", stage)]["outcome"] == "fail"
        assert criteria[("error_rate", stage)]["observed"] == pytest.approx(0.1, abs=0.03)
    result.stdout.fnmatch_lines(
        ["*load error_rate * >= 0.0100 at 2 users (stage 1/2): errors: 5xx * (list *)*"]
    )


def test_a_stage_too_short_for_its_criteria_is_inconclusive(apex: ApexPytester) -> None:
    result, report = run_suite(
        apex,
        "clean",
        "--apex-threshold=load_stages=1",
        "--apex-threshold=stage_duration_s=0.3",
        "--apex-threshold=load_think_s=0.2",
    )
    assert result.ret == INCONCLUSIVE_EXIT
    assert report["verdict"] == "inconclusive"
    p95 = by_stage(report)[("p95", 1)]
    assert p95["outcome"] == "inconclusive"
    assert p95["samples"] < p95["min_samples"] == 20


def test_an_unreachable_app_fails_at_once_with_one_message(apex: ApexPytester) -> None:
    from tests.plugin.fake_load import free_port

    result, report = run_suite(apex, "clean", *SHORT, url=f"http://127.0.0.1:{free_port()}")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert report["verdict"] == "fail"
    result.stdout.fnmatch_lines(
        ["*load target http://127.0.0.1:* unreachable: *before any stage ran)*"]
    )
    assert "Traceback" not in result.stdout.str()


def test_an_agent_app_is_judged_on_its_time_to_the_final_event(apex: ApexPytester) -> None:
    result, report = run_suite(apex, "agent", *SHORT, agent=True)
    assert result.ret == 0, result.stdout.str()
    criteria = by_stage(report)
    for stage in (1, 2):
        final = criteria[("agent_final_event p95", stage)]
        assert final["outcome"] == "pass"
        assert 0.015 <= final["observed"] < 1.0  # three events 5 ms apart


def test_load_workers_share_the_users_and_merge_their_measurements(
    apex: ApexPytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # In a process of its own: an in-process run forgets the modules it imported, and
    # multiprocessing's picklers would then no longer match the modules imported again.
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    result, report = run_suite(apex, "clean", *SHORT, "--apex-load-workers=2", subprocess=True)
    assert result.ret == 0, result.stdout.str()
    stages = [c for c in report["criteria"] if c["name"] == "requests_per_s"]
    assert [c["stage"]["users"] for c in stages] == [2, 4]
    assert all(c["outcome"] == "pass" for c in stages)


def _memory(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in report["criteria"] if c["name"].startswith("memory_")}


def test_a_soak_of_a_steady_app_passes_its_memory_gates(apex: ApexPytester) -> None:
    result, report = run_suite(apex, "clean", *SOAK, marks="soak")
    assert result.ret == 0, result.stdout.str()
    memory = _memory(report)
    assert memory["memory_slope api"]["outcome"] == "pass", memory
    assert memory["memory_variance api"]["outcome"] == "pass", memory
    assert report["suites_run"] == ["soak"]


def test_a_soak_of_a_leaking_app_fails_its_memory_slope(apex: ApexPytester) -> None:
    result, report = run_suite(apex, "leak", *SOAK, marks="soak")
    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()
    slope = _memory(report)["memory_slope api"]
    assert slope["outcome"] == "fail", slope
    result.stdout.fnmatch_lines(["*soak memory_slope api * KB/h > 131072 KB/h*growth*r²*"])
