"""Copy-detection graph at scale: k-NN graph + connected components on synthetic descriptors.

Descriptors: ``--n`` unit vectors of ``--dim`` dimensions, stored float16 in a
memory-mapped ``.npy`` (as the dedup stage stores them). They come from
``--clusters`` broad clusters (neighbours at cosine ~0.3-0.5, below the
threshold, so that the index has realistic structure), and ``--dup-frac`` of
them are planted near-duplicates: groups of 2-6 copies of one vector with
noise (cosine 0.75-0.97 to each other, above the 0.6 threshold).

Measured: index build, k-NN search + edge streaming + union-find (the
stage's ``knn.copy_graph``), recall of the planted duplicate pairs (both ends
in one component), false merges (components joining different groups), the
process's peak memory. Peer: ``scipy.sparse.csgraph.connected_components``
on the same edges, timed against our union-find, same run.

    python bench/bench_dedup_graph.py --n 1000000 --nprobe 16

``--workers W`` runs the distributed graph instead (what the dedup stage's
helpers run, :mod:`curation.algorithms.knn_blocks`): the descriptors split
into ``--partitions`` float16 files, one coarse quantizer trained on a
sample and shared, each stored vector assigned to its list once; on a
``ray.cluster_utils.Cluster`` of a CPU-less head and ``W`` worker nodes of
one CPU, one actor per node owns a contiguous range of partitions as
queries and streams every partition file past them (inverted-list blocks,
exact scores); the driver unions the edge files. Printed per worker: queries,
edges, seconds, peak RSS (VmHWM); recall and false merges as above.

    python bench/bench_dedup_graph.py --n 2000000 --dim 256 --workers 4 --partitions 16 --nprobe 16

``--hash-codes N`` measures the helpers' Hamming-pair pass instead, with 1, 2
and 4 helpers on simulated nodes (:mod:`bench.hash_pairs`).

    python bench/bench_dedup_graph.py --hash-codes 4000000 --partitions 16
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np


def make_descriptors(path: Path, n: int, dim: int, clusters: int, dup_frac: float, seed: int = 0):
    """Writes the memmap; returns ``(x, group)``: group id per row, -1 for unplanted rows."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((clusters, dim)).astype(np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    # Planted groups: sizes 2..6 until dup_frac of the rows are taken.
    sizes = []
    while sum(sizes) < dup_frac * n:
        sizes.append(int(rng.integers(2, 7)))
    group = np.full(n, -1, np.int64)
    rows = rng.permutation(n)[: sum(sizes)]
    group[rows] = np.repeat(np.arange(len(sizes)), sizes)
    x = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(n, dim))
    # Each group's source vector, drawn like any other row.
    source = 0.7 * centers[rng.integers(0, clusters, len(sizes))] + rng.standard_normal((len(sizes), dim)) / np.sqrt(
        dim
    )
    noise_of_group = rng.uniform(0.15, 0.5, len(sizes))
    for start in range(0, n, 1 << 16):
        stop = min(n, start + (1 << 16))
        g = group[start:stop]
        base = 0.7 * centers[rng.integers(0, clusters, stop - start)]
        base += rng.standard_normal((stop - start, dim)) / np.sqrt(dim)
        planted = g >= 0
        noise = rng.standard_normal((int(planted.sum()), dim)) / np.sqrt(dim)
        base[planted] = source[g[planted]] + noise_of_group[g[planted], None] * noise
        x[start:stop] = base / np.linalg.norm(base, axis=1, keepdims=True)
    x.flush()
    return np.load(path, mmap_mode="r"), group


def planted_recall(labels: np.ndarray, group: np.ndarray) -> tuple[float, int]:
    """Share of planted pairs inside one component, and components mixing groups."""
    rows = np.flatnonzero(group >= 0)
    order = rows[np.argsort(group[rows], kind="stable")]
    g = group[order]
    same = g[1:] == g[:-1]
    pairs_total = together = 0
    # A group is recalled pairwise: count pairs (i, j) of a group in one component.
    starts = np.flatnonzero(np.r_[True, ~same])
    ends = np.r_[starts[1:], len(order)]
    for s, e in zip(starts, ends, strict=False):
        lab = labels[order[s:e]]
        _, counts = np.unique(lab, return_counts=True)
        together += int((counts * (counts - 1) // 2).sum())
        pairs_total += (e - s) * (e - s - 1) // 2
    # False merges: components holding rows of two groups, or a group and an unplanted row.
    key = np.where(group >= 0, group, -1 - np.arange(len(group)))
    comp_keys = np.unique(np.stack([labels, key], axis=1), axis=0)
    _, per_comp = np.unique(comp_keys[:, 0], return_counts=True)
    return together / max(pairs_total, 1), int((per_comp > 1).sum())


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main() -> None:
    import faiss

    from curation.algorithms import components as cc
    from curation.algorithms import knn
    from curation.index_config import IndexConfig

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--clusters", type=int, default=2000)
    parser.add_argument("--dup-frac", type=float, default=0.1)
    parser.add_argument("--kind", default="ivf_flat", choices=["flat", "ivf_flat", "ivf_pq"])
    parser.add_argument("--nlist", type=int, default=0, help="0: the index's default (4 sqrt(n))")
    parser.add_argument("--nprobe", type=int, default=16)
    parser.add_argument("--k", type=int, default=64)
    parser.add_argument("--threshold", type=float, default=0.6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rerank-margin", type=float, default=0.15, help="ivf_pq: re-rank above threshold - this")
    parser.add_argument("--workers", type=int, default=0, help="> 0: the distributed graph on this many nodes")
    parser.add_argument("--partitions", type=int, default=16, help="distributed: partition files of the pool")
    parser.add_argument("--hash-codes", type=int, default=0, help="> 0: the helpers' hash pairs over this many codes")
    parser.add_argument("--radius", type=int, default=4, help="hash pairs: Hamming radius (hashing.max_distance)")
    parser.add_argument("--helpers", default="1,2,4", help="hash pairs: the helper counts to run, in order")
    args = parser.parse_args()
    faiss.omp_set_num_threads(args.threads)
    if args.hash_codes:
        from bench.hash_pairs import bench

        bench(args)
        return
    if args.workers:
        with tempfile.TemporaryDirectory() as tmp:
            x, group = make_descriptors(Path(tmp) / "x.npy", args.n, args.dim, args.clusters, args.dup_frac)
            distributed(args, x, group, Path(tmp))
        return

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        x, group = make_descriptors(Path(tmp) / "x.npy", args.n, args.dim, args.clusters, args.dup_frac)
        print(
            f"{args.n} x {args.dim} float16 descriptors, {int((group >= 0).sum())} planted in "
            f"{group.max() + 1} groups; generated in {time.perf_counter() - t0:.0f} s"
        )
        config = IndexConfig(kind=args.kind, nlist=args.nlist or None, nprobe=args.nprobe, search_batch=16384)
        t0 = time.perf_counter()
        searcher = knn.Searcher(x, config, seed=0, floor=args.threshold - args.rerank_margin)
        t_build = time.perf_counter() - t0
        parent = cc.new_parent(args.n)
        edges_u, edges_v = [], []
        t0 = time.perf_counter()
        t_union = 0.0
        for start, sims, ids in searcher.chunks(x, args.k):
            u, v = knn.edges(start, sims, ids, args.threshold)
            t1 = time.perf_counter()
            cc.union(parent, u, v)
            t_union += time.perf_counter() - t1
            edges_u.append(u)
            edges_v.append(v)
        labels = cc.labels(parent)
        t_graph = time.perf_counter() - t0
        recall, false_merges = planted_recall(labels, group)
        u, v = np.concatenate(edges_u), np.concatenate(edges_v)
        print(
            f"index {searcher.kind} nlist={searcher.index.index.nlist if hasattr(searcher.index.index, 'nlist') else '-'}"
            f" nprobe={args.nprobe}: build (train + add) {t_build:.0f} s"
        )
        print(
            f"k-NN search (k={args.k}) + edges + union-find: {t_graph:.0f} s "
            f"({args.n / t_graph:.0f} vectors/s); {len(u)} edges > {args.threshold}"
        )
        print(f"planted pair recall {recall:.4f}; false merges {false_merges}; peak memory {peak_gb():.2f} GB")

    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    t0 = time.perf_counter()
    chunk = 1 << 20
    ours = cc.connected_components(args.n, [(u[i : i + chunk], v[i : i + chunk]) for i in range(0, len(u), chunk)])
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    _, theirs = connected_components(
        coo_matrix((np.ones(len(u), np.int8), (u, v)), shape=(args.n, args.n)), directed=False
    )
    t_scipy = time.perf_counter() - t0
    same = len(np.unique(np.stack([ours, theirs], 1), axis=0)) == len(np.unique(theirs)) == len(np.unique(ours))
    print(
        f"components of the same {len(u)} edges: ours {t_ours:.2f} s (streamed, 1M-edge chunks), "
        f"scipy {t_scipy:.2f} s (all edges in one sparse matrix); ratio x{t_scipy / t_ours:.2f}; "
        f"same partition: {same}"
    )
    print(f"(union-find inside the graph pass took {t_union:.2f} s of it)")


def vm_hwm() -> int:
    """Peak RSS in bytes of this process since its exec (ru_maxrss would include a forking parent's)."""
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmHWM"))


class GraphWorker:
    """One simulated node's share: its partitions as queries against every partition file."""

    def __init__(self, root: str, parts: int):
        import faiss

        faiss.omp_set_num_threads(1)
        self.root, self.parts = Path(root), parts

    def run(self, own: list[int], starts: list[int], k: int, threshold: float, nprobe: int) -> dict:
        from curation.algorithms import knn_blocks

        t0 = time.perf_counter()
        coarse = knn_blocks.Coarse(np.load(self.root / "centroids.npy"), nprobe)
        root, parts = self.root, self.parts

        class Stream:  # every partition file read whole and in order, one at a time
            def __iter__(self):
                for p in range(parts):
                    yield starts[p], np.load(root / f"x-{p}.npy"), np.load(root / f"lists-{p}.npy")

        queries = np.concatenate([np.load(root / f"x-{p}.npy") for p in own]).astype(np.float32)
        out = knn_blocks.self_graph(
            queries, starts[own[0]], Stream(), k, starts[-1], threshold, chunk=len(queries), coarse=coarse
        )
        np.savez(root / f"edges-{own[0]}.npz", u=out["u"], v=out["v"])
        return {
            "queries": len(queries),
            "edges": len(out["u"]),
            "seconds": time.perf_counter() - t0,
            "peak_rss": vm_hwm(),
        }


def distributed(args, x: np.ndarray, group: np.ndarray, root: Path) -> None:
    """The distributed graph on simulated nodes (see the module doc)."""
    import ray
    from ray.cluster_utils import Cluster

    from curation.algorithms import components as cc
    from curation.algorithms import knn_blocks
    from curation.algorithms.index import default_nlist
    from curation.algorithms.sharded_index import shard_ranges

    t0 = time.perf_counter()
    cuts = np.linspace(0, args.n, args.partitions + 1).astype(np.int64)
    nlist = args.nlist or default_nlist(args.n)
    rng = np.random.default_rng(0)
    sample = np.sort(rng.choice(args.n, size=min(args.n, 64 * nlist), replace=False))
    coarse = knn_blocks.Coarse.train(np.asarray(x[sample], np.float32), nlist, args.nprobe)
    np.save(root / "centroids.npy", coarse.centroids)
    for p in range(args.partitions):
        block = np.asarray(x[cuts[p] : cuts[p + 1]])
        np.save(root / f"x-{p}.npy", block)
        np.save(root / f"lists-{p}.npy", coarse.lists(block))
    print(
        f"{args.partitions} partition files, IVF{nlist} lists trained on {len(sample)} vectors and assigned: "
        f"{time.perf_counter() - t0:.0f} s (driver)"
    )
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    for _ in range(args.workers):
        cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        actor = ray.remote(num_cpus=1)(GraphWorker)
        workers = [
            actor.options(scheduling_strategy="SPREAD").remote(str(root), args.partitions) for _ in range(args.workers)
        ]
        ranges = shard_ranges(list(np.diff(cuts)), args.workers)
        t0 = time.perf_counter()
        stats = ray.get(
            [
                w.run.remote(list(range(lo, hi)), cuts.tolist(), args.k, args.threshold, args.nprobe)
                for w, (lo, hi) in zip(workers, ranges, strict=True)
            ]
        )
        t_search = time.perf_counter() - t0
    finally:
        ray.shutdown()
        cluster.shutdown()
    for i, s in enumerate(stats):
        print(
            f"worker {i}: {s['queries']} queries, {s['edges']} edges, {s['seconds']:.0f} s, "
            f"peak RSS {s['peak_rss'] / 2**20:.0f} MiB"
        )
    t0 = time.perf_counter()

    def edges():
        for lo, _ in ranges:
            with np.load(root / f"edges-{lo}.npz") as f:
                yield f["u"], f["v"]

    labels = cc.connected_components(args.n, edges())
    recall, false_merges = planted_recall(labels, group)
    total = sum(s["edges"] for s in stats)
    print(
        f"distributed graph: {args.workers} workers, {t_search:.0f} s wall ({args.n / t_search:.0f} vectors/s), "
        f"{total} edges > {args.threshold} ({total / args.n:.3f} per image); union of the edge files "
        f"{time.perf_counter() - t0:.2f} s; planted pair recall {recall:.4f}; false merges {false_merges}; "
        f"driver peak RSS {peak_gb():.2f} GB"
    )


if __name__ == "__main__":
    main()
