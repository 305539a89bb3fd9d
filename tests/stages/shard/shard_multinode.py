"""Run the shard stage on a simulated multi-node Ray cluster with 1, 2 and 4 workers, and at N and 4N.

Run as ``python -m tests.stages.shard.shard_multinode OUT_DIR`` (in its own
process: it starts its own Ray, apart from the tests' shared one). The head
declares no CPUs; two worker nodes declare two CPUs each. Writes
``OUT_DIR/runs.json``: per run, its directory, the workers it was given and
the nodes its steps ran on.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

WORKER = {"num_cpus": 2, "memory": 2 * 2**30}
# Equality runs: byte and count rolling, shuffled, several shards per unit.
EQUAL = {
    "partitions": 5,
    "rows": 120,
    "mean_bytes": 3000,
    "shard": {"max_samples_per_shard": 40, "max_bytes_per_shard": 60_000, "shards_per_task": 2},
}
# Memory runs: N and 4N pool images (16 KB on average), workers scaled alike.
MEMORY = {"rows": 1500, "mean_bytes": 16_000, "shard": {"max_samples_per_shard": 300, "shards_per_task": 1}}


def run_shard(
    out: Path, name: str, workers: int, partitions: int, rows: int, mean_bytes: int, shard: dict, address: str
) -> dict:
    from curation import config as cfg
    from curation.runner import run_pipeline
    from tests.stages.shard import shard_upstream

    run_dir = out / name
    shard_upstream.build(run_dir, partitions, rows, mean_bytes, missing=("000001000007",))
    data = shard_upstream.pipeline(run_dir, out / f"{name}-sets", shard)
    data["ray"] = {"address": address}
    data["runner"] = {"progress": False, "max_partition_retries": 0, "max_workers": workers}
    run_pipeline(cfg.validate(data), ["shard"])
    return {"run_dir": str(run_dir), "workers": workers, "partitions": partitions, "data": data}


def main(out: Path) -> None:
    from tests.simcluster import node_ids, simulated_cluster

    with simulated_cluster("shard-multinode", 2, WORKER) as cluster:
        runs = [run_shard(out, f"equal{w}", w, address=cluster.address, **EQUAL) for w in (1, 2, 4)]
        runs += [run_shard(out, f"memory{p}", w, p, address=cluster.address, **MEMORY) for w, p in ((1, 2), (4, 8))]
        (out / "runs.json").write_text(json.dumps({"runs": runs, **node_ids(cluster)}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
