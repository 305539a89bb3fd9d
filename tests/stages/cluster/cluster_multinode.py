"""Run the cluster stage with k-means over training workers on a simulated multi-node Ray cluster.

Run as ``python -m tests.stages.cluster.cluster_multinode OUT_DIR`` (in its own
process: it starts its own Ray, apart from the tests' shared one). The head
declares no CPUs; three worker nodes declare two CPUs each. Each case is a
run directory ``OUT_DIR/<case>``; ``OUT_DIR/nodes.json`` names the nodes.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

WORKER = {"num_cpus": 2, "memory": 2 * 2**30}
NODES = 3
# Same pool, several ways of splitting the training sample (train: null is one worker per node, whole nodes).
SAME_POOL = {
    "w1": {"workers": 1},
    "w2": {"workers": 2, "num_cpus": 1},
    "w4": {"workers": 4, "num_cpus": 0.5},
    "per_node": {},
}
# Hierarchical mode, the pool in one process and over three (random draws and ties across shards).
HIERARCHICAL = {"hier1": {"workers": 1}, "hier3": {"workers": 3, "num_cpus": 0.5}}
# Pool and workers grown alike: every worker holds the same share.
SCALED = {"mem1": (1, {"workers": 1}), "mem4": (4, {"workers": 4, "num_cpus": 0.5})}
SCALED_ROWS, SCALED_DIM = 40_000, 256


def same_pool_config(run_dir: Path, train: dict) -> dict:
    from tests.stages.cluster.test_cluster import config, planted_pool

    planted_pool(run_dir, sizes=(150,) * 8, d=16, n_partitions=4, noise=0.3, seed=3)
    return config(run_dir, k=12, init="random", n_iter=8, max_points_per_centroid=40, train=train)


def hierarchical_config(run_dir: Path, train: dict) -> dict:
    from tests.stages.cluster.test_cluster import config, planted_pool

    planted_pool(run_dir, sizes=(300, 120, 60, 20), n_partitions=4, seed=2)
    levels = [{"n_clusters": 20, "n_resampling_steps": 2, "sample_size": 5}, {"n_clusters": 6}]
    hier = {"levels": levels, "target_size": 100, "sampling_strategy": "random"}
    return config(run_dir, mode="hierarchical", hierarchical=hier, max_points_per_centroid=10, train=train)


def scaled_config(run_dir: Path, factor: int, train: dict) -> dict:
    from tests.stages.cluster.test_cluster import config, planted_pool

    planted_pool(run_dir, sizes=(SCALED_ROWS * factor // 8,) * 8, d=SCALED_DIM, n_partitions=4 * factor, seed=5)
    return config(
        run_dir,
        k=16,
        init="random",
        n_iter=3,
        max_points_per_centroid=SCALED_ROWS * factor,
        assign_batch_size=4096,
        train=train,
    )


def main(out: Path) -> None:
    from curation import config as cfg
    from curation.runner import run_pipeline
    from tests.simcluster import node_ids, simulated_cluster

    with simulated_cluster("cluster-multinode", NODES, WORKER) as cluster:
        cases = {name: same_pool_config(out / name, train) for name, train in SAME_POOL.items()}
        cases.update({name: hierarchical_config(out / name, train) for name, train in HIERARCHICAL.items()})
        cases.update({name: scaled_config(out / name, f, train) for name, (f, train) in SCALED.items()})
        for data in cases.values():
            data.update(ray={"address": cluster.address}, runner={"progress": False, "max_partition_retries": 0})
            run_pipeline(cfg.validate(data), ["cluster"])
        (out / "nodes.json").write_text(json.dumps(node_ids(cluster)))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
