"""The sharded pool index on a simulated 4-node Ray cluster vs one Faiss index in one process.

A synthetic pool (unit vectors around random centres, stored float16 as the
embed stage stores them) is written as a run directory's embed and cluster
outputs. Then, on a ``ray.cluster_utils.Cluster`` of a CPU-less head and
``--nodes`` worker nodes:

- sharded: the retrieve stage's own code (``retrieve_pool.start_shards`` with
  the runner's ``RayWorkers``) starts one shard actor per node; each reads its
  partitions and builds its index; queries fan out and merge (``ShardedIndex``);
- single: the peer, what the stage did before: one Ray task that loads every
  embedding and builds one index with the same settings (``build_index``).

Prints build time per shard, query time, peak RSS per actor, recall of both
against exact search, the ratios, and a projection to the paper's pool from
the measured per-shard rates (assumptions printed with it).

    OMP_WAIT_POLICY=PASSIVE python bench/bench_scale.py --n 2000000 --d 128
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def write_pool(run_dir: Path, n: int, d: int, partitions: int, seed: int) -> None:
    """Embed and cluster outputs of an all-alive synthetic pool, ``partitions`` files."""
    import pyarrow as pa

    from curation import tables
    from curation.atomic import write_json
    from curation.stages.base import files_dir, partition_path
    from curation.stages.embed import arrays as embeddings

    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((1000, d)).astype(np.float32)
    stages = run_dir / "stages"
    per = -(-n // partitions)
    for p in range(partitions):
        m = min(per, n - p * per)
        x = centres[rng.integers(0, len(centres), m)] + 0.7 * rng.standard_normal((m, d)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        name = tables.partition_name(p)
        status = tables.status_table([tables.sample_key(p, r) for r in range(m)], [tables.SUCCESS] * m)
        for step, extra in (
            ("embed/pool", {embeddings.ROW_COLUMN: pa.array(np.arange(m))}),
            (
                "cluster/assign",
                {"cluster": pa.array(np.zeros(m, np.int64)), "similarity": pa.array(np.ones(m, np.float32))},
            ),
        ):
            files_dir(stages / step).mkdir(parents=True, exist_ok=True)
            table = status
            for column, values in extra.items():
                table = table.append_column(column, values)
            tables.write_parquet(table, stages / step / f"{name}.parquet")
            write_json(partition_path(stages / step, p, "stats.json"), {"rows": m, "counts": {}, "files": {}})
        embeddings.save_array(partition_path(stages / "embed/pool", p, "npy"), x, "float16")
    for stage in ("embed", "cluster"):
        write_json(stages / stage / "_SUCCESS.json", {"stage": stage})


def single_index(run_dir: str, index: dict, queries: np.ndarray, k: int, seed: int) -> dict:
    """The peer: every embedding in one process, one index (runs as a fresh Ray task)."""
    from curation.algorithms.index import build_index
    from curation.index_config import IndexConfig
    from curation.runner.resources import peak_rss_bytes
    from curation.stages.embed.arrays import load_pool_embeddings

    started = time.perf_counter()
    _, x, _, _ = load_pool_embeddings(run_dir)
    built = build_index(x, IndexConfig(**index), "ip", seed)
    build_s = time.perf_counter() - started
    started = time.perf_counter()
    _, ids = built.search(queries, k)
    return {
        "build_s": build_s,
        "search_s": time.perf_counter() - started,
        "ids": ids,
        "peak_rss_bytes": peak_rss_bytes(),
    }


def exact(run_dir: Path, queries: np.ndarray, k: int) -> np.ndarray:
    """Ground truth, partition by partition (never the whole pool in memory)."""
    import faiss

    from curation.algorithms.sharded_index import merge_topk
    from curation.stages.embed.arrays import partition_embeddings, pool_partitions

    parts, start = [], 0
    for p in pool_partitions(run_dir):
        _, x, _ = partition_embeddings(run_dir, p)
        flat = faiss.IndexFlatIP(x.shape[1])
        flat.add(np.asarray(x, np.float32))
        scores, ids = flat.search(queries, k)
        parts.append((scores, ids + start))
        start += x.shape[0]
    return merge_topk(parts, k)[1]


def config_data(run_dir: Path, index: dict, shards: int) -> dict:
    return {
        "name": "bench",
        "run_dir": str(run_dir),
        "stages": ["retrieve"],
        "retrieve": {
            "datasets": [{"name": "q", "source": {"name": "q", "path": "."}, "mode": "as_is"}],
            "index": index,
            "shards": {"count": shards},
        },
    }


def run(args) -> dict:
    import ray
    from ray.cluster_utils import Cluster

    from curation import config as cfg
    from curation.algorithms.index import recall_at_k
    from curation.runner.resources import ray_cluster
    from curation.runner.workers import RayWorkers
    from curation.stages.base import Resources
    from curation.stages.registry import stage_context
    from curation.stages.retrieve.pool import start_shards

    root = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    run_dir = root / "run"
    try:
        t0 = time.perf_counter()
        write_pool(run_dir, args.n, args.d, args.partitions, args.seed)
        print(f"pool: {args.n:,} x {args.d} float16 in {args.partitions} partitions ({time.perf_counter() - t0:.0f} s)")
        rng = np.random.default_rng(args.seed + 1)
        from curation.stages.embed.arrays import take_pool_rows

        picks = np.sort(rng.choice(args.n, args.queries, replace=False))
        queries = take_pool_rows(run_dir, picks) + 0.05 * rng.standard_normal((args.queries, args.d)).astype(np.float32)
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        truth = exact(run_dir, queries, args.k)

        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
        for _ in range(args.nodes):
            cluster.add_node(num_cpus=args.cpus_per_node)
        ray.init(address=cluster.address, log_to_driver=False)
        cluster.wait_for_nodes()
        index = {"kind": args.kind, "nlist": args.nlist, "nprobe": args.nprobe, "pq_m": args.pq_m}
        ctx = stage_context(cfg.validate(config_data(run_dir, index, args.nodes)), "retrieve")
        workers = RayWorkers(ray_cluster(), "Bench")

        t0 = time.perf_counter()
        pool = start_shards(ctx, workers, args.nodes, Resources(num_cpus=args.cpus_per_node), True)
        build_wall = time.perf_counter() - t0
        t0 = time.perf_counter()
        _, ids = pool.index.search(queries, args.k)
        search_wall = time.perf_counter() - t0
        shards = [
            {**i, **w} for i, w in zip(pool.group.info(), pool.group.call("stats", [()] * args.nodes), strict=False)
        ]
        pool.group.stop()

        task = ray.remote(max_calls=1)(single_index).options(num_cpus=args.cpus_per_node)
        single = ray.get(task.remote(str(run_dir), index, queries, args.k, args.seed))
        ray.shutdown()
        cluster.shutdown()
        return {
            "shards": shards,
            "build_wall_s": build_wall,
            "search_wall_s": search_wall,
            "recall_sharded": recall_at_k(ids, truth),
            "recall_single": recall_at_k(single["ids"], truth),
            "single": {k: v for k, v in single.items() if k != "ids"},
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)


def project(result: dict, args) -> list[str]:
    """1.2B images on 20 x 8 V100 from the measured per-shard rates; every assumption stated."""
    shards = result["shards"]
    add_rate = np.median([s["vectors"] / s["build_s"] for s in shards])  # vectors/s per shard (its CPUs)
    per_shard = np.median([s["vectors"] for s in shards])
    scans = np.median(
        [
            s["queries"] * args.nprobe * s["vectors"] / min(args.nlist, s["vectors"] // 39) / s["search_s"]
            for s in shards
        ]
    )  # codes scanned per second per shard
    n, d, pq_m, nlist, nprobe = 1.2e9 * 0.62, 1280, 64, 65536, 64
    queries = 14_197_086 + 1_281_167 + 1_580_470  # the sample-mode query sets of Table 15
    cores = 20 * 96
    dim_cost = d / args.d
    build_h = n * dim_cost / (add_rate / args.cpus_per_node * cores) / 3600
    # Coarse k-means of each shard at nlist 65536 (Faiss trains on <= 256 points per list, 25
    # iterations): GEMM FLOPs at the k-means rate measured in RESULTS.md (65 GFLOP/s on 2 cores).
    train_points = min(n / 20, 256 * nlist)
    train_h = 2 * train_points * nlist * d * 25 / (65e9 / 2 * 96) / 3600
    scan_h = queries * nprobe * n / nlist * (pq_m / args.pq_m) / (scans / args.cpus_per_node * cores) / 3600
    refine_bytes = queries * 4 * 4 * d * 4  # k=4, refine_k_factor 4, float32 rows
    return [
        "projection to the paper's pool (derived, CPU shards; no GPU was measured):",
        f"  measured per shard ({args.cpus_per_node} CPU): build {add_rate:,.0f} vectors/s at d={args.d} "
        f"({per_shard:,.0f} vectors), search {scans:,.3g} PQ codes scanned/s at pq_m={args.pq_m}",
        f"  assumptions: {n:,.0f} surviving vectors (62 % of 1.2B), d=1280 (build cost x{dim_cost:.0f}), IVF-PQ64 "
        f"(scan cost x{pq_m / args.pq_m:.0f}), nlist {nlist}, nprobe {nprobe} per shard (ray_cluster / lvd142m), "
        f"{queries:,} sample-mode queries, 20 nodes x 96 CPUs all used by shards, rates linear in cores",
        f"  build at the measured rate (add + a {args.nlist}-list training): {build_h:,.1f} h; plus the coarse "
        f"k-means of 65536 lists per shard on its node's 96 CPUs: {train_h:,.1f} h (on GPUs: not measured)",
        f"  search (PQ scans): {scan_h:,.1f} h; exact re-ranking reads {refine_bytes / 1e12:,.1f} TB from shard RAM",
        f"  memory per shard with 20 shards: {n / 20 * (pq_m + 8 + 4 * d) / 2**30:,.0f} GiB (PQ codes, ids, "
        f"float32 rows for re-ranking) of 768 GiB per node",
        "  GPUs (index_cpu_to_all_gpus, sharded over a node's 8 V100) are not measured here: the CPU figures"
        " above are an upper bound for the paper's nodes",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2_000_000)
    parser.add_argument("--d", type=int, default=128)
    parser.add_argument("--partitions", type=int, default=40)
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--cpus-per-node", type=int, default=1)
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--kind", default="ivf_pq")
    parser.add_argument("--nlist", type=int, default=1024)
    parser.add_argument("--nprobe", type=int, default=16)
    parser.add_argument("--pq-m", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()}")
    result = run(args)
    print(f"load average after: {os.getloadavg()}")
    single = result["single"]
    print(f"{'':<10} {'vectors':>10} {'build s':>8} {'search s':>9} {'peak RSS MiB':>13}")
    for i, s in enumerate(result["shards"]):
        print(
            f"shard {i:<4} {s['vectors']:>10,} {s['build_s']:>8.1f} {s['search_s']:>9.2f} "
            f"{s['peak_rss_bytes'] / 2**20:>13,.0f}  node {s['placement']['node_id'][:8]}"
        )
    print(
        f"{'single':<10} {args.n:>10,} {single['build_s']:>8.1f} {single['search_s']:>9.2f} "
        f"{single['peak_rss_bytes'] / 2**20:>13,.0f}"
    )
    largest = max(s["peak_rss_bytes"] for s in result["shards"])
    print(
        f"sharded wall: build {result['build_wall_s']:.1f} s, {args.queries:,} queries {result['search_wall_s']:.2f} s"
    )
    print(
        f"ratio build wall single/sharded: {single['build_s'] / result['build_wall_s']:.2f}; "
        f"query wall single/sharded: {single['search_s'] / result['search_wall_s']:.2f}; "
        f"peak RSS largest shard/single: {largest / single['peak_rss_bytes']:.2f}"
    )
    print(f"recall@{args.k}: sharded {result['recall_sharded']:.4f}, single {result['recall_single']:.4f}")
    print("\n".join(project(result, args)))


if __name__ == "__main__":
    main()
