"""A Ray cluster of three nodes on this machine: a head and two more, one CPU each.

`ray.cluster_utils.Cluster` starts each node as its own raylet (about 5 s for all three),
every one on 127.0.0.1 with no dashboard; the test process connects as a driver. It is the
shape of a real cluster (actors placed one per node, a node's death seen as such) without
a second machine.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from pytest_apex.executors.ray_executor import LOOPBACK_ONLY_ENV

# Before Ray is imported anywhere in this process (see LOOPBACK_ONLY_ENV): nodes and driver
# stay on 127.0.0.1.
os.environ.setdefault(LOOPBACK_ONLY_ENV, "0")

try:
    import ray
    from ray import cluster_utils
except ImportError:  # the extra is optional; in CI its absence fails the tests instead
    ray = cluster_utils = None

# Skipped without the extra on a developer's machine; in CI (`make setup` installs it) a
# missing Ray is a broken run, so the tests run and fail.
NEEDS_RAY = pytest.mark.skipif(
    ray is None and not os.environ.get("CI"),
    reason="the ray extra is not installed (pip install -e '.[ray]')",
)

NODES = 3
NODE_ARGS: dict[str, Any] = {
    "num_cpus": 1,
    "node_ip_address": "127.0.0.1",
    "include_dashboard": False,
    "object_store_memory": 100 * 1024 * 1024,
}


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[str]:
    """The cluster's address, with this process connected to it as a driver."""
    cluster = cluster_utils.Cluster(initialize_head=True, head_node_args=NODE_ARGS)
    try:
        for _ in range(NODES - 1):
            cluster.add_node(**NODE_ARGS)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, namespace="apex-tests")
        yield cluster.address
    finally:
        ray.shutdown()
        cluster.shutdown()
