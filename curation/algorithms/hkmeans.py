"""Hierarchical k-means with resampling, and balanced hierarchical sampling.

A retrieval-free way to curate a pool (after Vo et al. 2024, "Automatic Data
Curation for Self-Supervised Learning"): flat k-means puts centroids where
the data is dense, so a dominant concept gets many clusters and a rare one
few. Clustering the centroids again, level after level, and then sampling
the same number of points under every node of the tree, top-down, evens the
concepts out.

Building the tree (:func:`build_hierarchy`), bottom-up: level 0 clusters the
points; level t clusters the centroids of level t-1. At every level, after
a first k-means, ``n_resampling_steps`` rounds each take ``sample_size``
points per cluster (the closest to its centroid, or random ones), run Lloyd
iterations on that subset starting from the current centroids, and reassign
every point. Resampling moves centroids off dense regions towards the
centre of each cluster's support.

Sampling (:func:`balanced_sample`), top-down: a node's quota is split among
its children with the largest cap ``x`` such that ``sum(min(x, size_i)) <=
quota`` (found by bisection, for all nodes of a level at once); the remainder
goes one point each to random children that have points to spare. At the
leaves, the quota is filled with the points closest to the centroid, or
random points. Exactly ``min(target, n)`` points are selected.

Everything is a pure function of arrays; shapes are in the docstrings.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from curation.algorithms.kmeans import (
    MAX_POINTS_PER_CENTROID,
    assign,
    closeness,
    lloyd,
    train_kmeans,
)

STRATEGIES = ("closest", "random")


@dataclass(frozen=True)
class LevelSpec:
    """One level of the tree: clusters, resampling rounds, points kept per cluster per round.

    ``init`` seeds the level's first k-means: ``kmeans++`` (robust, for up to
    a few thousand clusters) or ``random`` (Faiss' default, for any k).
    """

    n_clusters: int
    n_resampling_steps: int = 0
    sample_size: int = 1
    init: str = "kmeans++"


@dataclass
class Hierarchy:
    """A tree of clusters over n points; level 0 is the finest (the leaves).

    - ``centroids[t]``: ``(k_t, d)`` float32;
    - ``parents[t]``: ``(k_t,)`` int64, the level-(t+1) cluster of each
      level-t cluster (``len(parents) == levels - 1``);
    - ``labels``: ``(n,)`` int64, the leaf cluster of each point;
    - ``scores``: ``(n,)`` float32, each point's similarity to its leaf
      centroid (spherical) or squared L2 distance (otherwise).
    """

    centroids: list[np.ndarray]
    parents: list[np.ndarray]
    labels: np.ndarray
    scores: np.ndarray
    spherical: bool = True

    @property
    def n_clusters(self) -> list[int]:
        return [c.shape[0] for c in self.centroids]

    def paths(self) -> np.ndarray:
        """``(n, levels)`` int64: column t is each point's cluster at level t."""
        cols = [self.labels]
        for parent in self.parents:
            cols.append(parent[cols[-1]])
        return np.stack(cols, axis=1)

    def sizes(self) -> list[np.ndarray]:
        """Points under each cluster, per level: ``sizes[t]`` is ``(k_t,)`` int64."""
        out = [np.bincount(self.labels, minlength=self.n_clusters[0]).astype(np.int64)]
        for t, parent in enumerate(self.parents):
            grouped = np.bincount(parent, weights=out[-1], minlength=self.n_clusters[t + 1])
            out.append(grouped.astype(np.int64))
        return out


def rank_in_group(groups: np.ndarray, priority: np.ndarray) -> np.ndarray:
    """``(n,)`` int64 rank of each item within its group, 0 for the highest ``priority``.

    Ties keep input order.
    """
    n = len(groups)
    order = np.lexsort((-np.asarray(priority), np.asarray(groups)))
    sorted_groups = np.asarray(groups)[order]
    starts = np.flatnonzero(np.r_[True, sorted_groups[1:] != sorted_groups[:-1]])
    lengths = np.diff(np.r_[starts, n])
    ranks = np.empty(n, dtype=np.int64)
    ranks[order] = np.arange(n) - np.repeat(starts, lengths)
    return ranks


def _priority(labels: np.ndarray, near: np.ndarray, strategy: str, rng: np.random.Generator) -> np.ndarray:
    if strategy == "closest":
        return near
    if strategy == "random":
        return rng.random(len(labels))
    raise ValueError(f"unknown sampling strategy {strategy!r}; known: {STRATEGIES}")


def per_cluster_sample(
    labels: np.ndarray, near: np.ndarray, size: int, strategy: str, rng: np.random.Generator
) -> np.ndarray:
    """Sorted indices of up to ``size`` points per cluster: the nearest (``near`` highest) or random."""
    ranks = rank_in_group(labels, _priority(labels, near, strategy, rng))
    return np.flatnonzero(ranks < size)


@dataclass(frozen=True)
class KMeansOptions:
    """Settings shared by every k-means of a hierarchy.

    ``strategy`` picks the points of resampling rounds: ``closest`` to the
    centroid or ``random``. ``spherical``: cosine (True) or L2 geometry.
    """

    n_iter: int = 20
    spherical: bool = True
    strategy: str = "closest"
    seed: int = 0
    max_points_per_centroid: int = MAX_POINTS_PER_CENTROID
    gpu: bool = False


def resampled_kmeans(
    x: np.ndarray, spec: LevelSpec, options: KMeansOptions = KMeansOptions()
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """k-means on ``x`` (n, d) then ``spec.n_resampling_steps`` resampling rounds.

    Returns ``(centroids (k, d) float32, labels (n,) int64, scores (n,) float32)``.
    """
    o = options
    rng = np.random.default_rng(o.seed)
    centroids = train_kmeans(
        x,
        spec.n_clusters,
        n_iter=o.n_iter,
        spherical=o.spherical,
        seed=o.seed,
        max_points_per_centroid=o.max_points_per_centroid,
        init=spec.init,
        gpu=o.gpu,
    ).centroids
    labels, scores = assign(x, centroids, spherical=o.spherical, gpu=o.gpu)
    for _ in range(spec.n_resampling_steps):
        near = closeness(scores, spherical=o.spherical)
        subset = per_cluster_sample(labels, near, spec.sample_size, o.strategy, rng)
        centroids = lloyd(x[subset], centroids, n_iter=o.n_iter, spherical=o.spherical, gpu=o.gpu)
        labels, scores = assign(x, centroids, spherical=o.spherical, gpu=o.gpu)
    return centroids, labels, scores


def build_hierarchy(
    x: np.ndarray,
    levels: Sequence[LevelSpec],
    options: KMeansOptions = KMeansOptions(),
    progress: Callable[[int, int], None] | None = None,
) -> Hierarchy:
    """Cluster ``x`` (n, d), then the centroids of each level, per ``levels`` (finest first).

    Level t is seeded with ``options.seed + t``. Requires
    ``n >= levels[0].n_clusters`` and non-increasing cluster counts.
    ``progress(done, total)`` is called after each level.
    """
    centroids: list[np.ndarray] = []
    parents: list[np.ndarray] = []
    points = x
    labels = scores = np.zeros(0)
    for t, spec in enumerate(levels):
        c, lab, sc = resampled_kmeans(points, spec, replace(options, seed=options.seed + t))
        if t == 0:
            labels, scores = lab, sc
        else:
            parents.append(lab)
        centroids.append(c)
        points = c
        if progress is not None:
            progress(t + 1, len(levels))
    return Hierarchy(centroids, parents, labels, scores, options.spherical)


def allocate(sizes: np.ndarray, parent: np.ndarray, quota: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Split each parent's ``quota`` among its children as evenly as their ``sizes`` allow.

    ``sizes`` and ``parent`` are ``(m,)`` (child -> parent id), ``quota`` is
    ``(p,)``. Per parent, the cap ``x`` is the largest with
    ``sum(min(x, size)) <= quota``; the remaining ``quota - sum`` points go one
    each to random children whose size exceeds ``x``. Returns ``(m,)`` int64
    with ``0 <= out <= sizes`` and per-parent sums ``min(quota, sum sizes)``.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    parent = np.asarray(parent, dtype=np.int64)
    quota = np.asarray(quota, dtype=np.int64)
    p = len(quota)

    def taken(cap: np.ndarray) -> np.ndarray:
        return np.bincount(parent, weights=np.minimum(cap[parent], sizes), minlength=p).astype(np.int64)

    lo = np.zeros(p, dtype=np.int64)
    hi = np.zeros(p, dtype=np.int64)
    np.maximum.at(hi, parent, sizes)
    while np.any(lo < hi):  # bisection for every parent at once
        mid = (lo + hi + 1) // 2
        fits = taken(mid) <= quota
        lo = np.where(fits, mid, lo)
        hi = np.where(fits, hi, mid - 1)
    out = np.minimum(lo[parent], sizes)
    remainder = quota - taken(lo)
    spare = sizes > lo[parent]
    # Random order among the children with room; the first `remainder` of each parent get one more.
    ranks = rank_in_group(np.where(spare, parent, -1), rng.random(len(sizes)))
    out += spare & (ranks < remainder[parent])
    return out


def leaf_quotas(h: Hierarchy, target: int, rng: np.random.Generator) -> np.ndarray:
    """``(k_0,)`` int64 points to take from each leaf cluster, allocated top-down."""
    sizes = h.sizes()
    top = len(sizes) - 1
    quota = allocate(sizes[top], np.zeros(len(sizes[top]), dtype=np.int64), np.array([target]), rng)
    for t in range(top - 1, -1, -1):
        quota = allocate(sizes[t], h.parents[t], quota, rng)
    return quota


def select_in_clusters(labels: np.ndarray, priority: np.ndarray, quotas: np.ndarray) -> np.ndarray:
    """``(n,)`` bool: in each cluster, the ``quotas[c]`` points of highest ``priority``."""
    return rank_in_group(labels, priority) < np.asarray(quotas)[labels]


def balanced_sample(h: Hierarchy, target: int, *, strategy: str = "closest", seed: int = 0) -> np.ndarray:
    """``(n,)`` bool mask of ``min(target, n)`` points, balanced over the tree ``h``."""
    rng = np.random.default_rng(seed)
    quotas = leaf_quotas(h, target, rng)
    priority = _priority(h.labels, closeness(h.scores, spherical=h.spherical), strategy, rng)
    return select_in_clusters(h.labels, priority, quotas)
