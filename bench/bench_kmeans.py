"""k-means through ``curation.algorithms.kmeans`` vs Faiss called directly.

Same data, same settings, same process, runs interleaved (module, Faiss,
module, Faiss, ...) so that both see the same machine load. Each run trains
spherical k-means and then assigns every point to its nearest centroid.
Prints both times (median of the repeats), the overhead of the module, and
checks that both produce the same centroids and labels.

    python bench/bench_kmeans.py --n 200000 --d 256 --k 1024 --iters 20 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def synthetic(n: int, d: int, seed: int) -> np.ndarray:
    """Unit vectors around 2,000 random centres (embedding-like clustered data)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(2000, d)).astype(np.float32)
    x = centres[rng.integers(0, 2000, size=n)] + 0.5 * rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def run_module(x: np.ndarray, args) -> tuple[np.ndarray, np.ndarray]:
    from curation.algorithms.kmeans import assign, train_kmeans

    result = train_kmeans(x, args.k, n_iter=args.iters, seed=args.seed, max_points_per_centroid=args.mppc)
    labels, _ = assign(x, result.centroids)
    return result.centroids, labels


def run_faiss(x: np.ndarray, args) -> tuple[np.ndarray, np.ndarray]:
    import faiss

    kmeans = faiss.Kmeans(
        x.shape[1],
        args.k,
        niter=args.iters,
        spherical=True,
        seed=args.seed,
        max_points_per_centroid=args.mppc,
        min_points_per_centroid=1,
        verbose=False,
    )
    kmeans.train(x)
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(kmeans.centroids)
    _, ids = index.search(x, 1)
    return kmeans.centroids, ids[:, 0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--d", type=int, default=256)
    parser.add_argument("--k", type=int, default=1024)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--mppc", type=int, default=256, help="max points per centroid")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import faiss

    x = synthetic(args.n, args.d, args.seed)
    print(
        f"data {args.n} x {args.d} float32, k={args.k}, {args.iters} iterations, "
        f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} OpenMP threads, GPUs: {faiss.get_num_gpus()}"
    )
    times: dict[str, list[float]] = {"module": [], "faiss": []}
    outputs = {}
    for _ in range(args.repeats):
        for name, fn in (("module", run_module), ("faiss", run_faiss)):
            start = time.perf_counter()
            outputs[name] = fn(x, args)
            times[name].append(time.perf_counter() - start)
    same_centroids = np.array_equal(outputs["module"][0], outputs["faiss"][0])
    same_labels = np.array_equal(outputs["module"][1], outputs["faiss"][1])
    module, direct = statistics.median(times["module"]), statistics.median(times["faiss"])
    print(f"module: {module:.2f} s  (runs: {', '.join(f'{t:.2f}' for t in times['module'])})")
    print(f"faiss : {direct:.2f} s  (runs: {', '.join(f'{t:.2f}' for t in times['faiss'])})")
    print(f"module / faiss = {module / direct:.3f}  (overhead {100 * (module / direct - 1):+.1f}%, medians)")
    best = min(times["module"]) / min(times["faiss"])
    print(f"module / faiss = {best:.3f}  (overhead {100 * (best - 1):+.1f}%, fastest runs: least disturbed by load)")
    print(f"identical centroids: {same_centroids}, identical labels: {same_labels}")


if __name__ == "__main__":
    main()
