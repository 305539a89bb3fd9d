"""The dedup graph on a simulated multi-node Ray cluster, at N and 4N images with 1 and 4 helpers.

Run as ``python -m tests.stages.dedup.dedup_multinode OUT_DIR N`` (its own process and Ray cluster, like
``tests/runner/multinode.py``). The features step's output is written synthetically (random thumbnails and
128-d descriptors with planted copies across partitions, 12,500 images per partition), so that only the
graph and table steps run. Writes ``OUT_DIR/result.json``: per run the graph step's stats and the expected
planted groups' outcome.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

PER_PARTITION, DIMS = 12_500, 128


def write_features(run_dir: Path, partitions: int, seed: int = 0) -> dict[str, list[tuple[str, str]]]:
    """Download and features outputs of ``partitions`` partitions.

    Returns the planted key pairs: ``hash`` (the same thumbnail) and ``copy`` (a descriptor at cosine ~0.99,
    another thumbnail), each pair in two partitions.
    """
    from curation import tables
    from curation.atomic import write_json
    from curation.stages.base import files_dir, partition_path

    rng = np.random.default_rng(seed)
    n = partitions * PER_PARTITION
    thumbs = rng.integers(0, 256, (n, 32, 32), dtype=np.uint8)
    desc = rng.standard_normal((n, DIMS)).astype(np.float32)
    originals = rng.choice(n, size=n // 100, replace=False)
    copies = (originals + PER_PARTITION + 7) % n  # another partition
    fresh = ~np.isin(copies, originals)
    originals, copies = originals[fresh], copies[fresh]
    half = len(originals) // 2
    thumbs[copies[:half]] = thumbs[originals[:half]]  # byte copies of the thumbnail: one hash group
    near = desc[originals[half:]] + 0.1 * rng.standard_normal((len(originals) - half, DIMS)).astype(np.float32)
    desc[copies[half:]] = near  # near copies of the descriptor
    keys = [tables.sample_key(p, i) for p in range(partitions) for i in range(PER_PARTITION)]
    fetch, step = run_dir / "stages/download/fetch", run_dir / "stages/dedup/features"
    for d in (fetch, step):
        files_dir(d).mkdir(parents=True)
    for p in range(partitions):
        rows = slice(p * PER_PARTITION, (p + 1) * PER_PARTITION)
        part = keys[rows]
        status = tables.status_table(part, ["success"] * len(part))
        tables.write_parquet(status, partition_path(fetch, p, "parquet"))
        write_json(partition_path(fetch, p, "stats.json"), {"rows": len(part), "files": {}})
        table = (
            status.append_column("width", pa.array(np.full(len(part), 64)))
            .append_column("height", pa.array(np.full(len(part), 64)))
            .append_column("feature_row", pa.array(np.arange(len(part))))
        )
        tables.write_parquet(table, partition_path(step, p, "parquet"))
        np.save(partition_path(step, p, "thumbs.npy"), thumbs[rows])
        np.save(partition_path(step, p, "sources.npy"), np.zeros((len(part), 0, 0), np.uint8))
        np.save(partition_path(step, p, "desc.npy"), desc[rows].astype(np.float16))
        write_json(partition_path(step, p, "stats.json"), {"rows": len(part), "files": {}})
    write_json(run_dir / "stages/download/_SUCCESS.json", {"stage": "download"})
    pairs = [(keys[o], keys[c]) for o, c in zip(originals, copies, strict=True)]
    return {"hash": pairs[:half], "copy": pairs[half:]}


def config(run_dir: Path, address: str, helpers: int) -> dict:
    return {
        "name": "t",
        "run_dir": str(run_dir),
        "stages": ["dedup"],
        "ray": {"address": address},
        "runner": {"progress": False, "max_partition_retries": 0},
        "dedup": {
            "hashing": {"max_distance": 0, "variants": {"enabled": False}, "fit_samples": 2000},
            "descriptor": {"backbone": "resnet18", "dims": DIMS, "device": "cpu", "allow_random_weights": True},
            "copy_dedup": {"threshold": 0.8, "k": 8, "index": {"kind": "ivf_flat", "nlist": 64, "nprobe": 8}},
            "graph": {"workers": {"count": helpers}},
        },
    }


def main(out: Path, partitions: int) -> None:
    from curation import config as cfg
    from curation.runner import run_pipeline
    from tests.simcluster import simulated_cluster

    result = {}
    with simulated_cluster("dedup-multinode", 3, {"num_cpus": 2}, include_dashboard=False) as cluster:
        for label, parts, helpers in (("n", partitions, 1), ("4n", 4 * partitions, 4)):
            run_dir = out / label
            planted = write_features(run_dir, parts)
            run_pipeline(cfg.validate(config(run_dir, cluster.address, helpers)), ["dedup"])
            graph = json.loads((run_dir / "stages/dedup/graph/_SUCCESS.json").read_text())
            result[label] = {
                "graph": graph,
                "planted": planted,
                "nodes": [n.node_id for n in [cluster.head_node, *cluster.worker_nodes]],
            }
    (out / "result.json").write_text(json.dumps(result, default=str))


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]))
