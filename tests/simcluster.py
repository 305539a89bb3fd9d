"""A simulated multi-node Ray cluster for the multinode scripts: a head without CPUs and worker nodes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def simulated_cluster(namespace: str, workers: int, worker: dict[str, Any], **head: Any) -> Iterator[Any]:
    """``ray.cluster_utils.Cluster`` with ``workers`` nodes of ``worker`` resources, Ray joined to it; both shut
    down on exit. The head holds no CPUs (``head`` adds to its arguments), so all work lands on the workers."""
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, **head})
    for _ in range(workers):
        cluster.add_node(**worker)
    ray.init(address=cluster.address, namespace=namespace, log_to_driver=False)
    cluster.wait_for_nodes()
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


def node_ids(cluster: Any) -> dict[str, Any]:
    """The head's and the workers' node ids (to check where work ran)."""
    return {"head": cluster.head_node.node_id, "workers": [w.node_id for w in cluster.worker_nodes]}
