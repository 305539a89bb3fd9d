"""Run embed, cluster and retrieve on a simulated multi-node Ray cluster.

Run as ``python -m tests.runner.multinode RUN_DIR`` (in its own process: it
starts its own Ray, apart from the tests' shared one). The head declares no
CPUs; two worker nodes declare CPUs, fake GPUs, memory and a custom
resource. Writes ``RUN_DIR/nodes.json`` (node ids by role) next to the run.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

WORKER = {"num_cpus": 2, "num_gpus": 1, "memory": 2 * 2**30, "resources": {"pool_node": 1}}


def upstream(run_dir: Path) -> dict:
    """The synthetic pool with a dedup table; embed and cluster are left to run."""
    from curation import tables
    from curation.atomic import write_json
    from curation.stages.base import partition_path
    from tests.stages.retrieve import retrieval_upstream as up

    up.build(run_dir)
    table_dir = run_dir / "stages/dedup/table"
    table_dir.mkdir(parents=True)
    for p in range(up.PARTITIONS):
        name = tables.partition_name(p)
        shutil.copy(run_dir / f"stages/embed/pool/{name}.parquet", table_dir / f"{name}.parquet")
        write_json(partition_path(table_dir, p, "stats.json"), {"rows": up.ROWS, "counts": {}, "files": {}})
    write_json(run_dir / "stages/dedup/_SUCCESS.json", {"stage": "dedup"})
    for stage in ("embed", "cluster"):
        shutil.rmtree(run_dir / "stages" / stage)
    keys, x, _ = up.alive_vectors()
    up.write_curated(run_dir, "near", x[:5])  # the queries (embed.curated is empty here)
    data = up.pipeline(run_dir, [], {"datasets": [{"name": "near_knn", "source": "near", "mode": "sample", "k": 2}]})
    data["embed"]["curated"] = [{"name": "near", "path": str(run_dir / "stages/embed/curated")}]
    data["embed"]["model"] = {
        "kind": "random",
        "arch": "vit_small_patch16",
        "image_size": 32,
        "options": {"depth": 1, "embed_dim": 16, "num_heads": 2, "img_size": 32},
    }
    data["retrieve"]["shards"] = {"memory_gb": 0.25}
    return data


def main(run_dir: Path) -> None:
    from curation import config as cfg
    from curation.runner import run_pipeline
    from tests.simcluster import node_ids, simulated_cluster

    with simulated_cluster("multinode", 2, WORKER, num_gpus=0) as cluster:
        data = upstream(run_dir)
        data["ray"] = {"address": cluster.address}
        data["runner"] = {"progress": False, "max_partition_retries": 0}
        # The curated step would re-embed "near" from its folder: keep the written queries.
        run_pipeline(cfg.validate(data), ["embed", "cluster", "retrieve"])
        (run_dir / "nodes.json").write_text(json.dumps(node_ids(cluster)))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
