"""Sample-mode retrieval through ``curation`` vs Faiss called directly.

Same index object, same pool, same queries, same process; runs interleaved
(module, Faiss, module, Faiss, ...) so that both see the same machine load,
and the best of the repeats is kept (the least disturbed run of each path).

- Faiss: ``index.search(queries, k)`` on the raw Faiss index, once for all
  queries.
- module, search: ``KnnIndex.search`` (batched search, dtype handling).
- module, retrieval: what the retrieve stage does per sample-mode dataset:
  search, ``sample_hits``, ``cap_hits`` and ``resolve_collisions``.

For each index kind (exact flat, IVF-PQ + exact re-ranking) it prints
queries/s of each path, their ratio to Faiss, and the recall@k of the
index against exact search.

    python bench/bench_retrieval.py --n 200000 --d 256 --queries 20000 --k 4 --repeats 5
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def synthetic(n: int, d: int, centres: int, seed: int) -> np.ndarray:
    """Unit vectors around random centres (embedding-like clustered data)."""
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centres, d)).astype(np.float32)
    x = c[rng.integers(0, centres, size=n)] + 0.5 * rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def module_search(index, queries, k):
    return index.search(queries, k)


def module_retrieval(index, queries, k):
    return postprocess(*index.search(queries, k))


def postprocess(scores, ids):
    """What the stage does with a search result: hits, cap, collisions."""
    from curation.algorithms import retrieval as rt

    hits = rt.sample_hits(scores, ids, 0)
    hits = rt.cap_hits(hits, None, -hits.similarity)
    return rt.resolve_collisions(hits, "best", 1)


def faiss_direct(index, queries, k):
    return index.index.search(queries, k)


def timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def bench_kind(name: str, pool, queries, config, args) -> dict:
    from curation.algorithms.index import build_index

    start = time.perf_counter()
    index = build_index(pool, config, seed=args.seed)
    build_s = time.perf_counter() - start
    paths = {"faiss": faiss_direct, "module search": module_search, "module retrieval": module_retrieval}
    times: dict[str, list[float]] = {p: [] for p in paths}
    for _ in range(args.repeats):
        for path, fn in paths.items():
            times[path].append(timed(fn, index, queries, args.k))
    scores, ids_module = index.search(queries, args.k)
    ids_faiss = index.index.search(queries, args.k)[1]
    same = bool((ids_module == ids_faiss).all())
    # The module's own work, timed alone: a stable bound on its overhead.
    post_s = min(timed(postprocess, scores, ids_module) for _ in range(args.repeats))
    return {
        "kind": name,
        "index": type(index.index).__name__,
        "build_s": build_s,
        "same_results": same,
        "qps": {p: len(queries) / min(t) for p, t in times.items()},
        "ids": ids_module,
        "post_s": post_s,
        "faiss_s": min(times["faiss"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000, help="pool vectors")
    parser.add_argument("--d", type=int, default=256)
    parser.add_argument("--queries", type=int, default=20_000)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--nlist", type=int, default=1024)
    parser.add_argument("--nprobe", type=int, default=16)
    parser.add_argument("--pq-m", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import faiss

    from curation.algorithms.index import recall_at_k
    from curation.index_config import IndexConfig

    pool = synthetic(args.n, args.d, 2000, args.seed)
    queries = synthetic(args.queries, args.d, 2000, args.seed)[::-1].copy()
    print(
        f"pool {args.n} x {args.d}, {args.queries} queries, k={args.k}, "
        f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads, GPUs: {faiss.get_num_gpus()}"
    )
    kinds = {
        "exact": IndexConfig(kind="flat"),
        "ivf_pq": IndexConfig(kind="ivf_pq", nlist=args.nlist, nprobe=args.nprobe, pq_m=args.pq_m),
    }
    results = [bench_kind(name, pool, queries, config, args) for name, config in kinds.items()]
    truth = results[0]["ids"]
    for r in results:
        recall = recall_at_k(r["ids"], truth)
        faiss_qps = r["qps"]["faiss"]
        print(
            f"\n{r['kind']} ({r['index']}): build {r['build_s']:.1f} s, recall@{args.k} vs exact {recall:.3f}, "
            f"module and Faiss results identical: {r['same_results']}"
        )
        for path, qps in r["qps"].items():
            print(f"  {path:<17} {qps:>12,.0f} queries/s   ratio to Faiss {qps / faiss_qps:.3f}")
        print(
            f"  hits + cap + collisions alone: {1000 * r['post_s']:.1f} ms for {len(queries)} queries "
            f"({100 * r['post_s'] / r['faiss_s']:.2f} % of the Faiss search time)"
        )


if __name__ == "__main__":
    main()
