"""K-means with Faiss: train on a sample, assign every point in chunks.

Points are embeddings, one per row: ``x`` is ``(n, d)`` float32. With
``spherical=True`` (the default, for L2-normalised embeddings) centroids are
renormalised after every update and points go to the centroid of highest
inner product (cosine similarity); otherwise to the nearest centroid in L2.

Faiss runs on every GPU of the process when ``gpu=True``; :func:`use_gpu`
decides that from the device setting and ``faiss.get_num_gpus()``. Faiss is
imported inside the functions so that importing this module stays cheap.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# Faiss' own default cap on the training points per centroid.
MAX_POINTS_PER_CENTROID = 256
# Points per centroid that k-means++ seeding looks at.
SEEDING_POINTS_PER_CENTROID = 32
# Query rows per Faiss search call: bounds the (chunk, k) distance block.
ASSIGN_CHUNK = 65536


@dataclass(frozen=True)
class KMeansResult:
    """Trained centroids ``(k, d)`` float32 and how training went.

    ``objective`` is Faiss' final objective on the training points: the sum
    of similarities (spherical) or of squared L2 distances (otherwise).
    """

    centroids: np.ndarray
    objective: float
    n_train: int
    gpu: bool


def use_gpu(device: str = "auto") -> bool:
    """Whether Faiss should run on GPU: ``cpu`` never, ``cuda``/``auto`` when Faiss sees one."""
    if device == "cpu":
        return False
    import faiss

    return faiss.get_num_gpus() > 0


def sample_indices(n: int, k: int, max_points_per_centroid: int, seed: int) -> np.ndarray:
    """Sorted indices of the training sample: ``min(n, k * max_points_per_centroid)`` of ``range(n)``.

    Seeded, without replacement; all of ``range(n)`` when the cap exceeds ``n``.
    """
    m = min(n, k * max_points_per_centroid)
    if m == n:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=m, replace=False)).astype(np.int64)


def as_points(x: np.ndarray) -> np.ndarray:
    """C-contiguous float32 view or copy of ``x`` (n, d), as Faiss needs."""
    return np.ascontiguousarray(x, dtype=np.float32)


def train_kmeans(
    x: np.ndarray,
    k: int,
    *,
    n_iter: int = 20,
    spherical: bool = True,
    seed: int = 0,
    max_points_per_centroid: int = MAX_POINTS_PER_CENTROID,
    n_redo: int = 1,
    init: str = "random",
    gpu: bool = False,
) -> KMeansResult:
    """Train ``k`` centroids on ``x`` (n, d); Faiss subsamples beyond ``k * max_points_per_centroid``.

    ``n_redo`` runs that many seeded initialisations and keeps the best
    objective (random initialisation can leave two centroids in one cluster).
    ``init="kmeans++"`` seeds with :func:`kmeans_plus_plus` instead of Faiss'
    random points (one pass over the sample per centroid: for small k).
    Requires ``1 <= k <= n`` (callers clamp or refuse before).
    """
    import faiss

    x = as_points(x)
    n, d = x.shape
    if not 1 <= k <= n:
        raise ValueError(f"k-means needs 1 <= k <= n, got k={k}, n={n}")
    kmeans = faiss.Kmeans(
        d,
        k,
        niter=n_iter,
        spherical=spherical,
        seed=seed,
        max_points_per_centroid=max_points_per_centroid,
        nredo=n_redo,
        # Faiss only prints a warning below this; callers record n_train instead.
        min_points_per_centroid=1,
        gpu=bool(gpu),
        verbose=False,
    )
    seeds = None
    if init == "kmeans++":
        seeds = kmeans_plus_plus_seeds(lambda rows: x[rows], n, k, max_points_per_centroid, seed)
    elif init != "random":
        raise ValueError(f"unknown k-means init {init!r}; known: random, kmeans++")
    objective = kmeans.train(x, init_centroids=seeds)
    centroids = np.ascontiguousarray(kmeans.centroids, dtype=np.float32)
    return KMeansResult(
        centroids=centroids,
        objective=float(objective),
        n_train=min(n, k * max_points_per_centroid),
        gpu=bool(gpu),
    )


def kmeans_plus_plus_seeds(
    take: Callable[[np.ndarray], np.ndarray], n: int, k: int, max_points_per_centroid: int, seed: int
) -> np.ndarray:
    """k-means++ seeds (k, d) for a training sample of ``n`` rows; ``take(rows)`` reads rows of it.

    Seeding needs far fewer points than training (it costs k passes over
    them): it looks at ``min(max_points_per_centroid, 32)`` per centroid.
    """
    rows = sample_indices(n, k, min(max_points_per_centroid, SEEDING_POINTS_PER_CENTROID), seed)
    return kmeans_plus_plus(take(rows), k, np.random.default_rng(seed))


def kmeans_plus_plus(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Greedy k-means++ seeding: ``(k, d)`` float32 rows of ``x`` (n, d).

    Each step draws ``2 + log(k)`` candidates with probability proportional to
    the squared L2 distance to the nearest seed so far and keeps the one that
    lowers the total most (Arthur and Vassilvitskii 2007; the greedy variant
    avoids two seeds in one tight cluster).
    """
    x = as_points(x)
    sq_norms = np.einsum("ij,ij->i", x, x)
    trials = 2 + int(np.log(k))

    def sq_dist(idx: np.ndarray) -> np.ndarray:  # (len(idx), n)
        return np.maximum(sq_norms[idx, None] - 2 * x[idx] @ x.T + sq_norms[None], 0)

    chosen = [int(rng.integers(len(x)))]
    nearest = sq_dist(np.array(chosen))[0]
    for _ in range(1, k):
        total = nearest.sum()
        if total <= 0:  # fewer distinct points than seeds: any point will do
            candidates = rng.integers(len(x), size=1)
        else:
            candidates = rng.choice(len(x), size=trials, p=nearest / total)
        updated = np.minimum(nearest[None], sq_dist(candidates))
        best = int(updated.sum(axis=1).argmin())
        chosen.append(int(candidates[best]))
        nearest = updated[best]
    return x[chosen].copy()


def flat_index(centroids: np.ndarray, *, spherical: bool = True, gpu: bool = False):
    """Exact Faiss index over ``centroids`` (k, d): inner product or L2; on all GPUs if ``gpu``."""
    import faiss

    centroids = as_points(centroids)
    index: faiss.Index = faiss.IndexFlatIP(centroids.shape[1]) if spherical else faiss.IndexFlatL2(centroids.shape[1])
    index.add(centroids)
    if gpu:
        index = faiss.index_cpu_to_all_gpus(index)
    return index


def assign(
    x: np.ndarray,
    centroids: np.ndarray | None = None,
    *,
    index=None,
    spherical: bool = True,
    chunk_size: int = ASSIGN_CHUNK,
    gpu: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid of every row of ``x`` (n, d), searched ``chunk_size`` rows at a time.

    Pass ``centroids`` (k, d), or a prebuilt ``index`` from :func:`flat_index`
    to reuse it across calls. Returns ``labels`` (n,) int64 and ``scores``
    (n,) float32: the similarity to the centroid when spherical, else the
    squared L2 distance.
    """
    if index is None:
        if centroids is None:
            raise ValueError("assign: pass centroids or a prebuilt index")
        index = flat_index(centroids, spherical=spherical, gpu=gpu)
    n = x.shape[0]
    labels = np.empty(n, dtype=np.int64)
    scores = np.empty(n, dtype=np.float32)
    for start in range(0, n, chunk_size):
        stop = min(n, start + chunk_size)
        distances, ids = index.search(as_points(x[start:stop]), 1)
        labels[start:stop] = ids[:, 0]
        scores[start:stop] = distances[:, 0]
    return labels, scores


def closeness(scores: np.ndarray, *, spherical: bool = True) -> np.ndarray:
    """Scores turned into "higher is closer to the centroid" for ranking."""
    return scores if spherical else -scores


def cluster_means(x: np.ndarray, labels: np.ndarray, previous: np.ndarray, *, spherical: bool) -> np.ndarray:
    """Mean of the points of each cluster (k, d); empty clusters keep ``previous``.

    Accumulates in float64 (sorted by label, one ``reduceat``), so the result
    does not depend on the order of the points.
    """
    k = previous.shape[0]
    order = np.argsort(labels, kind="stable")
    sorted_labels = labels[order]
    counts = np.bincount(labels, minlength=k)
    present = np.flatnonzero(counts)
    starts = np.searchsorted(sorted_labels, present)
    sums = np.add.reduceat(x[order].astype(np.float64), starts, axis=0)
    means = previous.astype(np.float64, copy=True)
    means[present] = sums / counts[present, None]
    if spherical:
        norms = np.linalg.norm(means[present], axis=1, keepdims=True)
        means[present] /= np.maximum(norms, 1e-12)
    return means.astype(np.float32)


def lloyd(
    x: np.ndarray,
    init: np.ndarray,
    *,
    n_iter: int,
    spherical: bool = True,
    gpu: bool = False,
) -> np.ndarray:
    """``n_iter`` Lloyd iterations on ``x`` (n, d) from ``init`` (k, d); returns centroids (k, d).

    Unlike Faiss' trainer it accepts fewer points than clusters (clusters
    that get no point keep their centroid), which resampled k-means needs.
    """
    centroids = as_points(init)
    for _ in range(n_iter):
        labels, _ = assign(x, centroids, spherical=spherical, gpu=gpu)
        centroids = cluster_means(x, labels, centroids, spherical=spherical)
    return centroids


def cluster_sizes(labels: np.ndarray, k: int) -> np.ndarray:
    """Points per cluster (k,) int64; labels < 0 (unassigned) are ignored."""
    labels = np.asarray(labels)
    return np.bincount(labels[labels >= 0], minlength=k).astype(np.int64)
