"""The pool-sized parts of hierarchical k-means, with the pool split into shards.

Level 0 of :mod:`curation.algorithms.hkmeans` clusters the whole pool and
balanced sampling ranks every point; the levels above cluster centroids
(``k_0`` rows) and stay in one process. Here the pool is split into
:class:`PoolPart` shards (a contiguous range of pool rows each, with their
labels and scores) and the reducer talks to them through a :class:`Fan`:

- :func:`first_level`: the level-0 k-means on a seeded sample of
  ``min(n, k * max_points_per_centroid)`` pool rows (sorted; the sample
  rows stay in their shards), trained by
  :func:`~curation.algorithms.kmeans_sharded.train_sharded`; then every
  resampling round: each shard proposes its best ``sample_size`` points per
  cluster, the reducer keeps the best over all shards (ties in pool order),
  Lloyd iterations run on that subset in the shards (empty clusters keep
  their centroid, as :func:`~curation.algorithms.kmeans.lloyd`), and every
  shard reassigns its points;
- :func:`select_balanced`: leaf quotas from the cluster sizes
  (:func:`~curation.algorithms.hkmeans.allocate`, top-down), then each shard
  proposes its best ``quota`` points per leaf and the reducer keeps the best
  over all shards.

Random choices replay the single-process streams: the draw of pool row
``i`` in a round is draw ``position + i`` of ``default_rng(seed)`` (a PCG64
stream advanced in O(1)), so ``random`` strategies pick the same points for
any split. Results are the same for any number of shards (sums in float64);
they equal :func:`~curation.algorithms.hkmeans.build_hierarchy` and
:func:`~curation.algorithms.hkmeans.balanced_sample` on the same training
sample up to float rounding.

Memory per shard: its rows (``m * d * 4``), labels and scores (``m * 12``),
its training rows and ``k * d * 16`` (see ``kmeans_sharded``). Reducer:
centroids and sums (``k * d * 20``), the sample's indices while they are
handed out (``n_train * 8``) and the proposals: ``shards * k * sample_size``
per resampling round, at most ``shards * target`` for the selection (20
bytes each).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Protocol

import numpy as np

from curation.algorithms.hkmeans import KMeansOptions, LevelSpec, allocate, rank_in_group
from curation.algorithms.kmeans import (
    as_points,
    assign,
    closeness,
    flat_index,
    kmeans_plus_plus_seeds,
    sample_indices,
)
from curation.algorithms.kmeans_sharded import ShardStats, combine, partial_stats, train_sharded


class PoolPart:
    """Pool rows ``offset .. offset + len(x)``: ``x`` (m, d), then their ``labels``/``scores`` (m,)."""

    def __init__(self, x: np.ndarray, offset: int, spherical: bool = True, gpu: bool = False):
        self.x, self.offset, self.spherical, self.gpu = x, int(offset), spherical, gpu
        self.labels = np.full(len(x), -1, dtype=np.int64)
        self.scores = np.zeros(len(x), dtype=np.float32)
        self.selected = np.zeros(len(x), dtype=bool)
        self.members = as_points(np.zeros((0, x.shape[1])))

    def size(self) -> int:
        return int(self.x.shape[0])

    def set_members(self, rows: np.ndarray) -> int:
        """The rows (local, sorted) that the next k-means trains on; returns their count."""
        self.members = as_points(self.x[np.asarray(rows, dtype=np.int64)])
        return len(self.members)

    def stats(self, centroids: np.ndarray) -> ShardStats:
        return partial_stats(self.members, centroids, spherical=self.spherical, gpu=self.gpu)

    def take(self, rows: np.ndarray) -> np.ndarray:
        return self.members[rows]

    def assign(self, centroids: np.ndarray) -> np.ndarray:
        """Nearest centroid of every row, kept here; returns the rows per cluster (k,)."""
        index = flat_index(centroids, spherical=self.spherical, gpu=self.gpu)
        self.labels, self.scores = assign(self.x, index=index)
        return np.bincount(self.labels, minlength=len(centroids)).astype(np.int64)

    def proposals(self, quota: np.ndarray, strategy: str, seed: int, position: int) -> tuple[np.ndarray, ...]:
        """``(pool rows, clusters, priorities)`` of this shard's best ``quota[c]`` rows of each cluster c.

        ``closest``: highest closeness to the centroid; ``random``: highest of
        draws ``position + pool row`` of ``default_rng(seed)``. Rows ascending.
        """
        if strategy == "closest":
            priority = closeness(self.scores, spherical=self.spherical).astype(np.float64)
        elif strategy == "random":
            bits = np.random.PCG64(seed)  # default_rng(seed)'s bit generator, typed as one that can advance
            bits.advance(position + self.offset)
            priority = np.random.Generator(bits).random(self.size())
        else:
            raise ValueError(f"unknown sampling strategy {strategy!r}; known: closest, random")
        keep = np.flatnonzero(rank_in_group(self.labels, priority) < np.asarray(quota)[self.labels])
        return self.offset + keep, self.labels[keep], priority[keep]

    def select(self, rows: np.ndarray) -> int:
        """Mark pool rows ``rows`` (any of them may be another shard's) selected; returns how many are here."""
        local = np.asarray(rows, dtype=np.int64) - self.offset
        local = local[(local >= 0) & (local < self.size())]
        self.selected[:] = False
        self.selected[local] = True
        return len(local)

    def results(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.labels, self.scores, self.selected


class Fan(Protocol):
    """Calls a :class:`PoolPart` method on every shard (``args[i]`` for shard i); results in shard order."""

    def __call__(self, method: str, args: list[tuple]) -> Iterator[Any]: ...


def local_fan(parts: list[PoolPart]) -> Fan:
    """A :class:`Fan` over shards held in this process."""
    return lambda method, args: (getattr(p, method)(*a) for p, a in zip(parts, args, strict=True))


class _Members:
    """:class:`~curation.algorithms.kmeans_sharded.Shards` over the shards' training rows."""

    def __init__(self, fan: Fan, sizes: list[int]):
        self.fan, self._sizes, self.starts = fan, sizes, np.cumsum([0, *sizes])

    def sizes(self) -> list[int]:
        return list(self._sizes)

    def stats(self, centroids: np.ndarray) -> Iterable[ShardStats]:
        return self.fan("stats", [(centroids,)] * len(self._sizes))

    def take(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        which = np.searchsorted(self.starts, rows, side="right") - 1
        parts = list(self.fan("take", [(rows[which == s] - self.starts[s],) for s in range(len(self._sizes))]))
        out = np.empty((len(rows), parts[0].shape[1]), dtype=np.float32)
        for s, part in enumerate(parts):
            out[which == s] = part
        return out


def _hand_out(fan: Fan, offsets: np.ndarray, rows: np.ndarray) -> _Members:
    """Give each shard its rows of the sorted pool rows ``rows`` as training rows."""
    cut = np.searchsorted(rows, offsets)
    args = [(rows[lo:hi] - off,) for lo, hi, off in zip(cut[:-1], cut[1:], offsets[:-1], strict=True)]
    return _Members(fan, [int(c) for c in fan("set_members", args)])


def _best(fan: Fan, count: int, quota: np.ndarray, strategy: str, seed: int, position: int) -> np.ndarray:
    """Sorted pool rows: the best ``quota[c]`` of every cluster c over all shards (ties in pool order)."""
    got = list(fan("proposals", [(quota, strategy, seed, position)] * count))
    rows, clusters, priority = (np.concatenate([g[i] for g in got]) for i in range(3))
    return np.sort(rows[rank_in_group(clusters, priority) < quota[clusters]])


def first_level(
    fan: Fan, sizes: list[int], spec: LevelSpec, options: KMeansOptions, progress=None
) -> tuple[np.ndarray, np.ndarray]:
    """Level 0 over the shards: ``(centroids (k, d) float32, points per cluster (k,) int64)``.

    Leaves every shard's ``labels`` and ``scores`` set. ``sizes``: rows per shard.
    """
    o, k = options, spec.n_clusters
    offsets = np.cumsum([0, *sizes])
    n = int(offsets[-1])
    members = _hand_out(fan, offsets, sample_indices(n, k, o.max_points_per_centroid, o.seed))
    m = sum(members.sizes())
    seeds = None
    if spec.init == "kmeans++":
        seeds = kmeans_plus_plus_seeds(members.take, m, k, o.max_points_per_centroid, o.seed)
    centroids = train_sharded(members, k, n_iter=o.n_iter, spherical=o.spherical, seed=o.seed, init=seeds).centroids
    counts = sum(fan("assign", [(centroids,)] * len(sizes)))
    for r in range(spec.n_resampling_steps):
        quota = np.full(k, spec.sample_size, dtype=np.int64)
        members = _hand_out(fan, offsets, _best(fan, len(sizes), quota, o.strategy, o.seed, r * n))
        for _ in range(o.n_iter):
            centroids = _lloyd_update(combine(members.stats(centroids)), centroids, o.spherical)
        counts = sum(fan("assign", [(centroids,)] * len(sizes)))
        if progress is not None:
            progress(r + 1, spec.n_resampling_steps)
    return centroids, counts


def _lloyd_update(total: ShardStats, previous: np.ndarray, spherical: bool) -> np.ndarray:
    """:func:`~curation.algorithms.kmeans.cluster_means` from summed stats: empty clusters keep ``previous``."""
    present = total.counts > 0
    means = previous.astype(np.float64, copy=True)
    means[present] = total.sums[present] / total.counts[present, None]
    if spherical:
        norms = np.linalg.norm(means[present], axis=1, keepdims=True)
        means[present] /= np.maximum(norms, 1e-12)
    return means.astype(np.float32)


def select_balanced(
    fan: Fan, count: int, sizes: list[np.ndarray], parents: list[np.ndarray], target: int, strategy: str, seed: int
) -> int:
    """Mark ``min(target, n)`` points selected in the shards, as :func:`~curation.algorithms.hkmeans.balanced_sample`.

    ``sizes[t]``: points per cluster of level t; ``parents[t]``: the level-(t+1)
    cluster of each level-t cluster. Returns the number selected.
    """
    rng = np.random.default_rng(seed)
    top = len(sizes) - 1
    quota = allocate(sizes[top], np.zeros(len(sizes[top]), dtype=np.int64), np.array([target]), rng)
    for t in range(top - 1, -1, -1):
        quota = allocate(sizes[t], parents[t], quota, rng)
    # allocate draws one number per cluster of each level: the point draws come after them.
    position = sum(len(s) for s in sizes)
    chosen = _best(fan, count, quota, strategy, seed, position)
    return int(sum(fan("select", [(chosen,)] * count)))
