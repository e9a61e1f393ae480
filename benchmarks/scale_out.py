"""How the load scales over Ray nodes on this machine (not a timed test).

A Ray cluster of three one-CPU nodes (`ray.cluster_utils.Cluster`, 127.0.0.1, no dashboard)
and the load engine benchmark's endpoint (`load_engine.Server`: uvicorn pinned to one core),
then, one after the other in the same run, the same closed-loop stage on 1, 2 and 3 workers
(`RayExecutor`, one actor per node, STRICT_SPREAD), `--users` users on each worker. The
throughput of each is the merged stage's completed requests over its elapsed time.

The last line is exactly ``scaling_2=S2 scaling_3=S3``: the requests/s of 2 and 3 nodes over
that of one. With no think time (the default) a worker runs as fast as its core lets it, so
the figure says how much more load more nodes push, up to what the machine's cores and the
endpoint allow: on a machine with fewer free cores than nodes, the nodes share them and the
ratio says so. With ``--think-s`` each user waits between requests, so a node offers a fixed
rate and a ratio below the number of nodes is work the distribution itself lost.

    .venv/bin/python benchmarks/scale_out.py [--duration 10] [--users 50] [--think-s 0]

Needs the ``ray`` and ``bench`` extras (``pip install -e '.[ray,bench]'``). Bounded in time
(three stages of --duration, at most 120 s each) and talks only to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from pytest_apex.executors.ray_executor import LOOPBACK_ONLY_ENV  # noqa: E402

os.environ.setdefault(LOOPBACK_ONLY_ENV, "0")  # nodes and driver on 127.0.0.1 only

NODES = 3
NODE_ARGS = {
    "num_cpus": 1,
    "node_ip_address": "127.0.0.1",
    "include_dashboard": False,
    "object_store_memory": 100 * 1024 * 1024,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per stage")
    parser.add_argument("--users", type=int, default=50, help="users on each worker")
    parser.add_argument("--think-s", type=float, default=0.0, help="pause between requests")
    parser.add_argument("--server-core", type=int, default=0)
    args = parser.parse_args()
    if not 0 < args.duration <= 120 or not 0 < args.users <= 2000:
        raise SystemExit("--duration must be within 0..120 s and --users within 1..2000")

    import ray
    from load_engine import Server
    from ray.cluster_utils import Cluster

    from pytest_apex.executors import RayExecutor
    from pytest_apex.load.engine import EngineSettings
    from pytest_apex.load.http import HttpSessionFactory
    from pytest_apex.load.stages import ClosedStage

    server = Server(args.server_core)
    began = time.monotonic()
    cluster = Cluster(initialize_head=True, head_node_args=NODE_ARGS)
    try:
        for _ in range(NODES - 1):
            cluster.add_node(**NODE_ARGS)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, namespace="apex-bench")
        print(f"cluster of {NODES} nodes up in {time.monotonic() - began:.1f} s", flush=True)
        server.wait_ready()
        settings = EngineSettings(window_s=args.duration, grace_s=2.0, probe=True)
        factory = HttpSessionFactory(server.url, think_s=args.think_s)
        rates: dict[int, float] = {}
        for nodes in range(1, NODES + 1):
            stage = ClosedStage(users=args.users * nodes, duration_s=args.duration)
            result = RayExecutor(cluster.address, nodes).run(
                [stage], factory, settings=settings, writer=lambda line, final: None
            )
            (measured,) = result.stages
            rates[nodes] = measured.requests_per_s
            figures = {
                "nodes": nodes,
                "users": stage.users,
                "requests_per_s": round(measured.requests_per_s),
                "p50_ms": round(measured.latency().p50_s * 1000, 2),
                "p95_ms": round(measured.latency().p95_s * 1000, 2),
                "errors": sum(measured.errors.values()),
                "generator_cpu_percent_worst": round(measured.health.cpu_percent),
                "lost": list(measured.lost),
            }
            print(json.dumps(figures), flush=True)
    finally:
        ray.shutdown()
        cluster.shutdown()
        server.stop()
    print(
        f"{os.cpu_count()} cores, endpoint on core {args.server_core}, {args.users} users a node, "
        f"{args.duration:g} s a stage, think {args.think_s:g} s"
    )
    print(f"scaling_2={rates[2] / rates[1]:.2f} scaling_3={rates[3] / rates[1]:.2f}")


if __name__ == "__main__":
    main()
