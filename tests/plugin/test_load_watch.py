"""What the load suites watch beside the load: health probes on a grid, memory from each source."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from pytest_apex.app.model import HealthRoute
from pytest_apex.load.availability import AvailabilityProber, availability_checks
from pytest_apex.load.memory import (
    ContainerMemory,
    MemorySampler,
    MemoryUnreadable,
    MetricMemory,
)
from pytest_apex.load.periodic import Periodic
from pytest_apex.suites.load_fixtures import RouteCheck

# An upper bound, not a wait: generous, since two xdist workers and a stack share two cores.
DEADLINE_S = 30.0


def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {DEADLINE_S} s: {what}")
        time.sleep(0.005)


class _Health:
    """A health endpoint that fails the next `failures` probes when told to."""

    def __init__(self) -> None:
        self.failures = 0
        self.lock = threading.Lock()

    def answer(self) -> tuple[int, dict[str, str]]:
        with self.lock:
            if self.failures > 0:
                self.failures -= 1
                return 503, {"status": "fail"}
        return 200, {"status": "pass"}


@pytest.fixture
def health_server() -> Iterator[tuple[str, _Health]]:
    state = _Health()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            code, body = state.answer()
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/health+json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/health", state
    finally:
        server.shutdown()
        server.server_close()


def test_periodic_stops_by_itself_at_its_bound() -> None:
    ticks: list[float] = []
    periodic = Periodic("t", ticks.append, 0.01, max_s=0.2)
    with periodic:
        periodic._thread.join(DEADLINE_S)  # bounded: it ends on its own
        assert not periodic._thread.is_alive()
    assert 1 <= len(ticks) <= 21
    assert all(b > a for a, b in itertools.pairwise(ticks))


def test_periodic_skips_the_ticks_an_overrun_missed_instead_of_bursting() -> None:
    ticks: list[float] = []

    def slow(at: float) -> None:
        ticks.append(at)
        time.sleep(0.05)

    with Periodic("t", slow, 0.01, max_s=0.3) as periodic:
        periodic._thread.join(DEADLINE_S)
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    assert gaps
    assert min(gaps) >= 0.045, gaps


def test_a_failing_tick_is_kept_and_stops_the_watch() -> None:
    def broken(at: float) -> None:
        raise RuntimeError("probe crashed")

    with Periodic("t", broken, 0.01, max_s=5.0) as periodic:
        _until(lambda: periodic.error is not None, "the error kept")
    assert str(periodic.error) == "probe crashed"


def test_availability_counts_an_outage_with_when_and_why(
    health_server: tuple[str, _Health],
) -> None:
    url, state = health_server
    route = HealthRoute("/health", "health+json")
    with httpx.Client(timeout=2.0) as client:
        check = RouteCheck(client, url, route)
        with AvailabilityProber({"api": check}, 0.005, max_s=30.0) as prober:
            _until(lambda: prober.services["api"].probes >= 20, "20 probes")
            with state.lock:
                state.failures = 5
            _until(lambda: prober.services["api"].probes >= 60, "60 probes")
    seen = prober.services["api"]
    assert seen.probes - seen.healthy == 5
    assert len(seen.outages) == 1
    assert seen.outages[0].probes == 5
    (result,) = availability_checks([seen], 0.999, error=None)
    assert result.observed == seen.healthy / seen.probes
    assert "1 outage, the longest 5 probes" in result.detail
    assert "503" in result.detail
    assert result.min_samples == 1000  # > 99.9 % cannot be told from fewer probes


def test_availability_of_a_service_that_never_answers_is_zero() -> None:
    route = HealthRoute("/health", "health+json")
    with httpx.Client(timeout=0.5) as client:
        # Port 9 (discard) on loopback: nothing listens, the connection is refused.
        check = RouteCheck(client, "http://127.0.0.1:9/health", route)
        with AvailabilityProber({"auth": check}, 0.01, max_s=30.0) as prober:
            # A probe that raised instead of recording its error stops the prober: say so.
            _until(
                lambda: prober.services["auth"].probes >= 3 or prober.error is not None,
                "3 probes",
            )
        assert prober.error is None, f"the prober stopped: {prober.error!r}"
    assert prober.services["auth"].ratio == 0.0
    assert "ConnectError" in prober.services["auth"].describe()


def test_no_health_route_is_inconclusive() -> None:
    (check,) = availability_checks([], 0.999, error=None)
    assert "no service has a health route" in check.inconclusive


class _Stats:
    """docker-py's ``APIClient.stats`` streaming these measurements, then ending."""

    def __init__(self, *payloads: dict[str, object], then: Exception | None = None) -> None:
        self.payloads = payloads
        self.then = then
        self.calls: list[tuple[str, bool, bool | None]] = []

    def stats(
        self,
        container: str,
        decode: bool | None = None,
        stream: bool = True,
        one_shot: bool | None = None,
    ) -> Iterator[dict[str, object]]:
        self.calls.append((container, stream, decode))
        yield from self.payloads
        if self.then is not None:
            raise self.then


@pytest.mark.parametrize(
    "stats",
    [
        {"usage": 300, "stats": {"total_inactive_file": 100}},  # cgroup v1
        {"usage": 300, "stats": {"inactive_file": 100}},  # cgroup v2
    ],
)
def test_container_memory_is_what_docker_stats_shows(stats: dict[str, object]) -> None:
    api = _Stats({"memory_stats": stats})
    assert ContainerMemory(api, "abc123").read() == 200.0
    assert api.calls == [("abc123", True, True)]  # Docker's stream, followed once


def test_container_memory_is_the_latest_measurement_until_it_goes_stale() -> None:
    now = [100.0]
    api = _Stats({"memory_stats": {"usage": 10}}, {"memory_stats": {"usage": 20}})
    memory = ContainerMemory(api, "abc123", stale_s=5.0, clock=lambda: now[0])
    _until(lambda: memory.read() == 20.0, "the second measurement")
    now[0] += 6.0  # the stream ended: no measurement since
    with pytest.raises(MemoryUnreadable, match="no measurement for 6 s"):
        memory.read()


def test_a_stopped_container_reports_no_memory() -> None:
    api = _Stats({"memory_stats": {}}, then=RuntimeError("container gone"))
    with pytest.raises(MemoryUnreadable, match="container gone"):
        ContainerMemory(api, "abc123").read()


def test_metric_memory_reads_the_gauge_with_prometheus_parser() -> None:
    page = (
        "# TYPE app_rss_bytes gauge\n"
        'app_rss_bytes{worker="1"} 1.5e8\n'
        'app_rss_bytes{worker="2"} 5e7\n'
        "other 3\n"
    )
    transport = httpx.MockTransport(lambda request: httpx.Response(200, text=page))
    with httpx.Client(transport=transport) as client:
        assert MetricMemory(client, "http://app/metrics", "app_rss_bytes").read() == 2e8
        with pytest.raises(MemoryUnreadable, match="no process_resident_memory_bytes"):
            MetricMemory(client, "http://app/metrics").read()


def test_the_sampler_keeps_readings_and_counts_the_failed_ones() -> None:
    readings = iter([1.0, 2.0])

    class Flaky:
        def read(self) -> float:
            try:
                return next(readings)
            except StopIteration:
                raise MemoryUnreadable("gone") from None

    with MemorySampler({"api": Flaky()}, 0.005, max_s=30.0) as sampler:
        _until(lambda: sampler.series["api"].unreadable >= 2, "two failed reads")
    series = sampler.series["api"]
    assert [value for _, value in series.samples] == [1.0, 2.0]
    assert series.last_error == "gone"
