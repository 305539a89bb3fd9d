"""k-means with the training sample split over workers vs Faiss' k-means in one process.

Two parts, on the same synthetic data (unit vectors around random centres):

- in-process: ``faiss.Kmeans`` (random init, spherical) vs
  ``kmeans_sharded.train_sharded`` over 1 and ``--nodes`` in-process shards,
  interleaved; time and the largest centroid difference to Faiss;
- simulated cluster: a ``ray.cluster_utils.Cluster`` of a CPU-less head and
  ``--nodes`` worker nodes of one CPU; the cluster stage's own train step
  (``cluster.train.workers``: 1, the previous single-process layout, vs one
  per node) on a run directory laid out as the embed stage writes it. Time
  of the train step, peak RSS of the step and of every helper, and whether
  both layouts give the same centroids.

    OMP_WAIT_POLICY=PASSIVE python bench/bench_kmeans_dist.py --n 400000 --d 128 --k 1024 --iters 10
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def synthetic(n: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((2000, d)).astype(np.float32)
    x = centres[rng.integers(0, len(centres), n)] + 0.7 * rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def in_process(x: np.ndarray, args) -> list[str]:
    import faiss

    from curation.algorithms.kmeans_sharded import ArrayShards, train_sharded

    def direct():
        km = faiss.Kmeans(
            x.shape[1],
            args.k,
            niter=args.iters,
            spherical=True,
            seed=args.seed,
            max_points_per_centroid=len(x),
            min_points_per_centroid=1,
        )
        km.train(x)
        return km.centroids

    def sharded(count):
        return lambda: (
            train_sharded(ArrayShards(x, count, spherical=True), args.k, n_iter=args.iters, seed=args.seed).centroids
        )

    runs = {"faiss.Kmeans": direct, "sharded x1": sharded(1), f"sharded x{args.nodes}": sharded(args.nodes)}
    times = {name: [] for name in runs}
    out = {}
    for _ in range(args.repeats):
        for name, fn in runs.items():
            start = time.perf_counter()
            out[name] = fn()
            times[name].append(time.perf_counter() - start)
    base = statistics.median(times["faiss.Kmeans"])
    lines = [
        f"in-process, {len(x)} x {x.shape[1]}, k={args.k}, {args.iters} iterations, "
        f"{faiss.omp_get_max_threads()} threads; median of {args.repeats}"
    ]
    for name, t in times.items():
        diff = float(np.abs(out[name] - out["faiss.Kmeans"]).max())
        lines.append(
            f"  {name:14s} {statistics.median(t):7.2f} s  x{statistics.median(t) / base:.3f}  "
            f"max |centroid - faiss| {diff:.2e}  runs {', '.join(f'{v:.2f}' for v in t)}"
        )
    return lines


def write_pool(run_dir: Path, x: np.ndarray, partitions: int) -> None:
    """The embed stage's outputs for an all-alive pool ``x``, float16, in ``partitions`` files."""
    import pyarrow as pa

    from curation import tables
    from curation.atomic import write_json
    from curation.stages.embed import arrays as embeddings

    root = embeddings.pool_dir(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    for p, rows in enumerate(np.array_split(np.arange(len(x)), partitions)):
        m, name = len(rows), tables.partition_name(p)
        status = tables.status_table([tables.sample_key(p, r) for r in range(m)], [tables.SUCCESS] * m)
        tables.write_parquet(
            status.append_column(embeddings.ROW_COLUMN, pa.array(np.arange(m))), root / f"{name}.parquet"
        )
        embeddings.save_array(root / f"{name}.npy", x[rows], "float16")
        write_json(root / f"{name}.stats.json", {"rows": m, "counts": {}})
    write_json(root.parent / "_SUCCESS.json", {"stage": "embed"})


def on_cluster(x: np.ndarray, args) -> list[str]:
    import ray
    from ray.cluster_utils import Cluster

    from curation import config as cfg
    from curation.atomic import read_json
    from curation.runner import run_pipeline

    tmp = Path(tempfile.mkdtemp(prefix="bench-kmeans-"))
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    for _ in range(args.nodes):
        cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, log_to_driver=False)
    cluster.wait_for_nodes()
    lines = [f"simulated cluster: {args.nodes} nodes of 1 CPU (on this machine's cores), cluster stage train step"]
    centroids = {}
    try:
        for workers in (1, args.nodes):
            run_dir = tmp / f"w{workers}"
            write_pool(run_dir, x, 4 * args.nodes)
            data = {
                "name": "bench",
                "run_dir": str(run_dir),
                "stages": ["cluster"],
                "seed": args.seed,
                "ray": {"address": cluster.address},
                "runner": {"progress": False},
                "cluster": {
                    "k": args.k,
                    "n_iter": args.iters,
                    "init": "random",
                    "device": "cpu",
                    "max_points_per_centroid": len(x),
                    "train": {"workers": workers},
                },
            }
            run_pipeline(cfg.validate(data), ["cluster"])
            stats = read_json(run_dir / "stages/cluster/train/_SUCCESS.json")
            centroids[workers] = np.load(run_dir / "stages/cluster/train/centroids.npy")
            helpers = [w["peak_rss_bytes"] / 2**20 for w in stats["workers"][1:]]
            lines.append(
                f"  workers {workers}: train {stats['duration_s']:.2f} s, step peak "
                f"{stats['peak_rss_bytes'] / 2**20:.0f} MiB holding {stats['workers'][0]['rows']} rows"
                + (f", helpers {min(helpers):.0f}-{max(helpers):.0f} MiB" if helpers else "")
            )
        lines.append(
            f"  same centroids for 1 and {args.nodes} workers: {np.array_equal(centroids[1], centroids[args.nodes])}"
        )
    finally:
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=400_000)
    parser.add_argument("--d", type=int, default=128)
    parser.add_argument("--k", type=int, default=1024)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-cluster", action="store_true")
    args = parser.parse_args()
    x = synthetic(args.n, args.d, args.seed)
    lines = in_process(x, args)
    if not args.skip_cluster:
        lines += on_cluster(x.astype(np.float16).astype(np.float32), args)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
