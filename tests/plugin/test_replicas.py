"""replicas_reached: instances counted behind one endpoint, each probe on its own connection.

The engine against a real local HTTP/1.1 server that would happily keep connections alive
and names its "instance" by the connection it answers on (what a TCP balancer in front of
replicas does), and the judgement on plain values; then the shipped health suite's test,
end to end against that server as an external target with a topology selected.
"""

from __future__ import annotations

import itertools
import json
import math
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import httpx
import pytest

from pytest_apex.health import replicas
from pytest_apex.health.replicas import InstancesSeen, count_instances, judge
from pytest_apex.suites.test_health import container_names
from pytest_apex.targets.base import ContainerInfo
from tests.plugin.conftest import ApexPytester


class Balanced(ThreadingHTTPServer):
    """Answers `/live` with the instance that a per-connection round robin over `instances`
    would pick, `/bare` with no instance at all."""

    daemon_threads = True
    instances: ClassVar[int] = 2

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.connections = itertools.count()
        self.connections_seen = 0
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive unless the client says otherwise
    server: Balanced

    def setup(self) -> None:
        super().setup()
        with self.server.lock:
            self.index = next(self.server.connections)
            self.server.connections_seen += 1

    def do_GET(self) -> None:
        body: dict[str, Any] = {"status": "pass"}
        if self.path == "/live":
            body["instance"] = f"replica-{self.index % self.server.instances}"
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def balanced() -> Iterator[Balanced]:
    server = Balanced()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_every_probe_goes_on_a_new_connection_and_names_its_instance(balanced: Balanced) -> None:
    seen = count_instances(balanced.url + "/live", "instance", 8)
    assert balanced.connections_seen == 8  # a kept-alive connection would have been one
    assert seen.instances == {"replica-0": 4, "replica-1": 4}
    assert (seen.sent, seen.answered, seen.distinct) == (8, 8, 2)
    verdict = judge(seen, 2)
    assert (verdict.observed, verdict.inconclusive) == (2, "")


def test_one_instance_where_two_are_promised_fails(balanced: Balanced) -> None:
    balanced.instances = 1  # the second replica never joined the balancer
    verdict = judge(count_instances(balanced.url + "/live", "instance", 8), 2)
    assert (verdict.observed, verdict.expected, verdict.inconclusive) == (1, 2, "")
    assert "replica-0 x8" in verdict.detail


def test_answers_that_name_no_instance_are_inconclusive(balanced: Balanced) -> None:
    verdict = judge(count_instances(balanced.url + "/bare", "instance", 4), 2)
    assert math.isnan(verdict.observed)  # nothing was counted
    assert verdict.inconclusive == "4 of 4 answers named no instance at 'instance'"


def test_unanswered_probes_are_inconclusive_not_a_missing_replica() -> None:
    calls = itertools.count()

    def half_down(request: httpx.Request) -> httpx.Response:
        if next(calls) % 2:
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(200, json={"instance": "replica-0"})

    seen = count_instances(
        "http://gateway/live", "instance", 8, transport=httpx.MockTransport(half_down)
    )
    assert (seen.answered, len(seen.failures)) == (4, 4)
    verdict = judge(seen, 2)
    assert verdict.observed == 1
    assert verdict.inconclusive == "4 of 8 probes went unanswered"
    assert "ConnectError: connection refused" in verdict.detail


def test_nothing_answered_is_inconclusive_with_nothing_observed() -> None:
    def down(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503)

    verdict = judge(
        count_instances("http://gateway/live", "i", 4, transport=httpx.MockTransport(down)), 2
    )
    assert math.isnan(verdict.observed)
    assert verdict.inconclusive == "no probe of http://gateway/live was answered"


def test_enough_instances_pass_even_when_a_probe_was_lost() -> None:
    seen = InstancesSeen("u", "instance", 8, {"a": 3, "b": 4}, failures=("ReadTimeout",))
    assert judge(seen, 2).inconclusive == ""


def test_nested_instance_fields_and_the_probe_count() -> None:
    def nested(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"host": {"name": "b-1"}})

    seen = count_instances("http://x/", "host.name", 3, transport=httpx.MockTransport(nested))
    assert seen.instances == {"b-1": 3}
    assert replicas.PROBES_PER_REPLICA * 2 == 8
    with pytest.raises(ValueError, match="probes must be >= 1"):
        count_instances("http://x/", "host.name", 0)


def test_a_service_without_instance_field_is_inconclusive_naming_it() -> None:
    verdict = replicas.no_instance_field("backend", 2)
    assert math.isnan(verdict.observed)
    assert "backend's liveness route names no instance_field" in verdict.inconclusive


def test_replicas_get_criterion_names_of_their_own() -> None:
    def container(service: str, number: int = 0) -> ContainerInfo:
        return ContainerInfo(
            service, f"id-{service}-{number}", "img", "running", "", "app", 0, 0, number=number
        )

    listed = [container("backend", 2), container("backend", 1), container("redis")]
    assert [name for name, _ in container_names(listed)] == ["backend-2", "backend-1", "redis"]
    unnumbered = [container("gateway"), container("gateway")]
    assert [name for name, _ in container_names(unnumbered)] == ["gateway-1", "gateway-2"]


# --- the shipped health suite's test ------------------------------------------------------


APP = """
[app]
name = "balanced"

[app.services.api]
role = "api"
port = 8080
liveness = {{ path = "{path}", format = "json-field", field = "status", expect = "pass"{field} }}

[app.topologies.two]
replicas = {{ api = 2 }}

[app.topologies.one]
replicas = {{ api = 1 }}
"""


def _suite(apex: ApexPytester, server: Balanced, *args: str, path: str = "/live") -> Any:
    field = ', instance_field = "instance"' if path == "/live" else ""
    apex.pytester.makefile(".toml", apex=APP.format(path=path, field=field))
    apex.pytester.makeconftest("")  # the real target session: external, no Docker
    result = apex.run(
        "-m", "health", "-k", "replica or live", f"--apex-url=api={server.url}", *args
    )
    return result, apex.report()


def _criteria(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in report["criteria"]}


def test_the_suite_counts_the_replicas_of_the_selected_topology(
    apex: ApexPytester, balanced: Balanced
) -> None:
    result, report = _suite(apex, balanced, "--apex-topology=two")
    assert result.ret == 0, result.stdout.str()
    reached = _criteria(report)["api.replicas_reached"]
    assert (reached["observed"], reached["threshold"], reached["op"]) == (2, 2, ">=")
    assert (reached["outcome"], reached["samples"]) == ("pass", 8)
    assert report["topology"] == "two"
    result.stdout.fnmatch_lines(["apex: profile ci, target external (*), topology two"])


def test_a_missing_replica_fails_the_suite(apex: ApexPytester, balanced: Balanced) -> None:
    balanced.instances = 1
    result, report = _suite(apex, balanced, "--apex-topology=two")
    assert result.ret == 1
    assert _criteria(report)["api.replicas_reached"]["outcome"] == "fail"
    result.stdout.fnmatch_lines(["*api.replicas_reached 1 instances < 2 instances*replica-0 x8*"])


def test_without_instance_field_the_criterion_is_inconclusive(
    apex: ApexPytester, balanced: Balanced
) -> None:
    result, report = _suite(apex, balanced, "--apex-topology=two", path="/bare")
    assert result.ret == 6  # inconclusive
    reached = _criteria(report)["api.replicas_reached"]
    assert reached["outcome"] == "inconclusive"
    assert "names no instance_field" in reached["reason"]


@pytest.mark.parametrize("topology", [(), ("--apex-topology=one",)], ids=["none", "one"])
def test_without_promised_replicas_the_criteria_do_not_change(
    apex: ApexPytester, balanced: Balanced, topology: tuple[str, ...]
) -> None:
    result, report = _suite(apex, balanced, *topology)
    assert result.ret == 0, result.stdout.str()
    assert set(_criteria(report)) == {"api.liveness"}
    assert report["topology"] == (topology[0].split("=")[1] if topology else None)
