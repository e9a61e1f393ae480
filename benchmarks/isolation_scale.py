"""How far the isolation suite scales on this machine.

Two figures (the README quotes both):

``scan``  frames scanned per second on one core by the engine (`IdentityBook` through
          `Inbox.scan`), on a synthetic stream shaped like the reference stack's agent events
          (no network), with the identities of every user registered. Its peer in the same
          run is `json.loads` of the same frames: the ratio says what the scan costs compared
          with merely parsing what arrived. Goal: >= 50,000 frames/s per core.

``users`` the largest number of concurrent users whose streaming isolation run the suite
          validates against the reference stack within a time budget (default 5 minutes):
          the suite's own agent test, run by pytest against a stack it brings up, at each
          size in turn until one fails or overruns. Goal: >= 2,000 users.

    .venv/bin/python benchmarks/isolation_scale.py scan [--frames N] [--users N]
    .venv/bin/python benchmarks/isolation_scale.py users [--sizes 500,1000,2000] [--budget 300]
        [--topology two_backends]

The users benchmark judges the suite's capacity, not the app's latency: the reference stack
runs at most 200 agent runs at once, so at thousands of users runs queue for seconds by
design. Its containment threshold is relaxed accordingly (`--run-p95`), and everything else
(every breach criterion, every control, every probe answered, every run completed, cleanup)
must still pass. `--topology two_backends` runs the backend as two replicas behind the
stack's balancer: one backend process saturates its core at about 1,000 users, so past that
the single replica measures the app, not the suite.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import json
import os
import random
import resource
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pytest_apex.isolation.canary import CanaryBook  # noqa: E402
from pytest_apex.isolation.identities import IdentityBook  # noqa: E402
from pytest_apex.isolation.inbox import IN_RUN, Inbox, Received  # noqa: E402

COMPOSE_FILE = ROOT / "fixtures" / "stack" / "docker-compose.staging.yml"
SUITE = ROOT / "tests" / "isolation" / "test_isolation.py"
EVENT_TYPES = (
    "agent_started",
    "agent_thinking",
    "tool_executing",
    "tool_completed",
    "agent_completed",
)


def synthetic_stream(users: int, frames: int, seed: int = 1) -> tuple[IdentityBook, Inbox]:
    """`frames` socket frames spread over `users`, each of its viewer's own run."""
    rng = random.Random(seed)
    canaries = CanaryBook()
    book = IdentityBook()
    people = []
    for index in range(users):
        user_id, thread_id = (
            str(uuid.UUID(int=rng.getrandbits(128))),
            str(uuid.UUID(int=rng.getrandbits(128))),
        )
        canary = canaries.item(index, "run request")
        for value, kind in ((user_id, "user_id"), (thread_id, "item_id"), (canary, "canary")):
            book.add(index, value, kind)  # type: ignore[arg-type]
        book.add(index, f"user{index}@apex.test", "username")
        people.append((user_id, thread_id, canary))
    inbox = Inbox()
    for n in range(frames):
        viewer = n % users
        user_id, thread_id, canary = people[viewer]
        run_id = str(uuid.UUID(int=rng.getrandbits(128)))
        event = {
            "type": EVENT_TYPES[n % len(EVENT_TYPES)],
            "run_id": run_id,
            "thread_id": thread_id,
            "agent_name": "apex_assistant",
            "timestamp": "2026-12-02T01:00:00.000000+00:00",
            "payload": {
                "user_id": user_id,
                "user_request": f"{canary} isolation run 1 of user {viewer}",
                "agent_instance_id": str(uuid.UUID(int=rng.getrandbits(128))),
            },
        }
        inbox.add(
            Received(
                viewer,
                "socket",
                n / 1000,
                json.dumps(event),
                f"socket 1, frame {n}",
                event["type"],
                IN_RUN,
            )
        )
    return book, inbox


def bench_scan(frames: int, users: int) -> dict[str, float]:
    book, inbox = synthetic_stream(users, frames)
    texts = [r.text for r in inbox.items]
    started = time.process_time()
    for text in texts:
        json.loads(text)
    parse_s = time.process_time() - started
    started = time.process_time()
    result = inbox.scan(book)
    scan_s = time.process_time() - started
    assert not result.leaks, "the synthetic stream holds no leak"
    # Proof the scan is looking: one frame of another user is found.
    leaked = Received(
        0, "socket", 0, inbox.items[1].text, "socket 1, frame x", "agent_started", IN_RUN
    )
    probe = Inbox()
    probe.add(leaked)
    assert probe.scan(book).leaks, "a frame of another user must be found"
    return {
        "frames": frames,
        "users": users,
        "scan_frames_per_s_per_core": frames / scan_s,
        "json_loads_frames_per_s_per_core": frames / parse_s,
        "ratio_vs_json_loads": (frames / scan_s) / (frames / parse_s),
    }


class ContainerCpu:
    """CPU seconds used by every container that runs while it watches (cgroup v1 or v2),
    sampled every second: the run's containers are removed before it ends."""

    V1 = Path("/sys/fs/cgroup/cpuacct/docker")
    V2 = Path("/sys/fs/cgroup/system.slice")

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _sample(self) -> None:
        # A container may end between the listing and the read: its last sample stands.
        for usage in self.V1.glob("*/cpuacct.usage"):
            with contextlib.suppress(OSError, ValueError):
                self.seconds[usage.parent.name] = int(usage.read_text()) / 1e9
        for stat in self.V2.glob("docker-*.scope/cpu.stat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                usec = int(stat.read_text().split("usage_usec", 1)[1].split()[0])
                self.seconds[stat.parent.name] = usec / 1e6

    def _watch(self) -> None:
        while not self._stop.wait(1.0):
            self._sample()

    def __enter__(self) -> ContainerCpu:
        self._sample()
        self._before = dict(self.seconds)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def used(self) -> float:
        return sum(v - self._before.get(k, 0.0) for k, v in self.seconds.items())


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measurements(stdout: str) -> dict[str, object]:
    """The suite's own measurements line (users, runs, frames, phases), when it printed one."""
    for line in stdout.splitlines():
        if line.startswith("isolation (repeat with") and ": {" in line:
            return dict(ast.literal_eval(line.split(": ", 1)[1]))
    return {}


def run_suite(
    users: int, budget_s: float, run_p95_s: float, topology: str
) -> tuple[bool, float, str]:
    report = ROOT / ".apex" / f"isolation-scale-{users}.json"
    command = [
        sys.executable,
        "-m",
        "pytest",
        str(SUITE),
        "-m",
        "isolation",
        "-k",
        "never_see_each_others_data",
        f"--apex-stack={COMPOSE_FILE}",
        f"--apex-report={report}",
        "--apex-threshold",
        f"concurrent_users_min={users}",
        "--apex-threshold",
        f"isolation_run_p95_s_max={run_p95_s}",
        "-p",
        "no:randomly",
        "-q",
        "-s",  # the suite's measurements line
        *([f"--apex-topology={topology}"] if topology else []),
    ]
    started, client_before = time.monotonic(), children_cpu_s()
    with ContainerCpu() as app_cpu:
        try:
            done = subprocess.run(
                command, cwd=ROOT, capture_output=True, text=True, timeout=budget_s + 120
            )
        except subprocess.TimeoutExpired:
            return False, time.monotonic() - started, "overran"
    seconds = time.monotonic() - started
    # The peer in the same run: what the app's containers spent serving what the suite
    # (pytest and the docker commands it ran) spent asking and checking.
    client_s, app_s = children_cpu_s() - client_before, app_cpu.used
    verdict = json.loads(report.read_text())["verdict"] if report.exists() else "no report"
    tail = "\n".join(done.stdout.splitlines()[-30:])
    measured = measurements(done.stdout)
    said = (
        f"verdict {verdict}; scenario {measured.get('wall_s', '?')} s, phases "
        f"{measured.get('phases_s', '?')}; {measured.get('runs', '?')} runs, "
        f"{measured.get('socket_frames', '?')} frames, {measured.get('rest_bodies', '?')} bodies; "
        f"CPU: suite {client_s:.0f} s, app containers {app_s:.0f} s, "
        f"suite_vs_app={client_s / app_s if app_s else float('nan'):.2f}"
    )
    ok = verdict == "pass" and seconds <= budget_s
    return ok, seconds, said if ok else f"{said}\n{tail}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="what", required=True)
    scan = sub.add_parser("scan")
    scan.add_argument("--frames", type=int, default=200_000)
    scan.add_argument("--users", type=int, default=2_000)
    users = sub.add_parser("users")
    users.add_argument("--sizes", default="500,1000,2000")
    users.add_argument("--budget", type=float, default=300.0)
    users.add_argument("--run-p95", type=float, default=60.0)
    users.add_argument("--topology", default="", help="a topology of the stack's description")
    args = parser.parse_args()
    if args.what == "scan":
        figures = bench_scan(args.frames, args.users)
        print(
            f"scan: {figures['scan_frames_per_s_per_core']:,.0f} frames/s per core "
            f"({figures['frames']:,} frames of {figures['users']:,} users); "
            f"json.loads alone: {figures['json_loads_frames_per_s_per_core']:,.0f} frames/s; "
            f"ratio_vs_json_loads={figures['ratio_vs_json_loads']:.2f}"
        )
        return
    largest = 0
    for size in (int(s) for s in args.sizes.split(",")):
        ok, seconds, said = run_suite(size, args.budget, args.run_p95, args.topology)
        print(
            f"users={size}: {'validated' if ok else 'NOT validated'} in {seconds:.0f} s "
            f"({os.cpu_count()} cores, topology {args.topology or 'default'}): {said}"
        )
        if not ok:
            break
        largest = size
    print(f"largest validated within {args.budget:.0f} s: {largest} users")


if __name__ == "__main__":
    main()
