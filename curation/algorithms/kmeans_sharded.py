"""Faiss' k-means with the training sample split into shards, step for step.

The training sample ``x`` (n, d) is split into shards held by separate
workers (processes, nodes). Every iteration:

1. the reducer broadcasts the centroids (k, d);
2. each shard computes :func:`partial_stats` of its rows: per-centroid sums
   (k, d) float64, counts (k,) int64 and its part of the objective;
3. the reducer adds the shards' stats (:func:`combine`, in shard order) and
   computes the new centroids with :func:`update`: means, Faiss' empty
   cluster split, renormalisation when spherical.

:func:`train_sharded` is the loop, written after ``faiss::Clustering::
train`` so that the centroids equal single-process ``faiss.Kmeans`` from the
same initialisation within float tolerance:

- random initialisation takes rows ``rand_perm(n, seed + 1 + redo *
  15486557)[:k]`` of the sample, the permutation Faiss draws
  (:func:`faiss_perm_head` replays its std::mt19937 stream in O(k) memory);
- assignment is a Faiss flat index over the centroids (inner product when
  spherical, else L2), on every GPU of the worker when asked;
- empty clusters are refilled by Faiss' rule (:func:`split_empty`): the same
  stream (std::mt19937 seeded 1234 every iteration), the same candidate
  order and probabilities, the same ``1 +- 1/1024`` perturbation;
- ``n == k`` copies the points, as Faiss does; ``n_redo`` keeps the run of
  best final objective; with given initial centroids each redo continues
  from the previous one's result (Faiss' ``n_input_centroids`` rule).

Invariants: the result does not depend on how the sample is split (sums are
float64, added in shard order: the float32 centroids are the same for any
split but for a float64 rounding tie, far below Faiss' own float32
accumulation error); counts are exact; ``counts.sum() == n`` every iteration.

Memory: a shard worker holds its rows (``n / workers * d * 4`` bytes), the
centroids, a Faiss index of them and its sums (``k * d * 16`` bytes); the
reducer holds the centroids, the running total and one shard's stats as it
arrives (``k * d * 20`` bytes), never a row of the sample beyond the ``k``
initial ones. Nothing grows with the pool beyond the shard. Network per
iteration: the centroids out to every shard, ``k * d * 8`` bytes of sums back
from each.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from curation.algorithms.kmeans import KMeansResult, as_points, flat_index

# Faiss' perturbation of a split centroid: "a bit above machine epsilon for float16".
SPLIT_EPS = 1 / 1024.0
# Faiss seeds the split stream with this constant in every iteration.
SPLIT_SEED = 1234
# Seed offset between redos (faiss::Clustering).
REDO_STRIDE = 15486557
# Rows per assignment call in a shard: bounds the (block, k) distance matrix.
STATS_BLOCK = 65536


@dataclass(frozen=True)
class ShardStats:
    """What one shard contributes to an update: ``sums`` (k, d) float64, ``counts`` (k,) int64.

    ``objective`` is the shard's sum of similarities (spherical) or squared
    L2 distances to the assigned centroids, in float64.
    """

    sums: np.ndarray
    counts: np.ndarray
    objective: float


def partial_stats(
    x: np.ndarray,
    centroids: np.ndarray,
    *,
    spherical: bool = True,
    gpu: bool = False,
    index=None,
    block: int = STATS_BLOCK,
) -> ShardStats:
    """Per-centroid sums, counts and objective of the rows ``x`` (m, d) of one shard.

    Each row goes to its nearest centroid by a Faiss flat index (built here
    from ``centroids`` (k, d), on all GPUs if ``gpu``, or passed prebuilt).
    Memory beyond ``x``: ``k * d * 8`` bytes of sums, the index (``k * d * 4``)
    and one block of ``block`` rows sorted by centroid (``block * d * 4``).
    """
    k, d = centroids.shape
    if index is None:
        index = flat_index(centroids, spherical=spherical, gpu=gpu)
    sums = np.zeros((k, d), dtype=np.float64)
    counts = np.zeros(k, dtype=np.int64)
    objective = 0.0
    for start in range(0, x.shape[0], block):
        rows = as_points(x[start : start + block])
        distances, labels = index.search(rows, 1)
        labels = labels[:, 0]
        _add_sorted(sums, labels, rows)
        counts += np.bincount(labels, minlength=k)
        objective += float(distances[:, 0].astype(np.float64).sum())
    return ShardStats(sums, counts, objective)


def _add_sorted(sums: np.ndarray, labels: np.ndarray, rows: np.ndarray) -> None:
    """``sums[labels[i]] += rows[i]`` for all i, one ``reduceat`` over rows sorted by label."""
    order = np.argsort(labels, kind="stable")
    sorted_labels = labels[order]
    present, starts = np.unique(sorted_labels, return_index=True)
    sums[present] += np.add.reduceat(rows[order], starts, axis=0, dtype=np.float64)


def combine(stats: Iterable[ShardStats]) -> ShardStats:
    """The stats of the union of the shards, added in the order given.

    Consumes an iterator one item at a time: with shards' stats fetched as
    they are asked for, the caller holds two ``(k, d)`` float64 blocks.
    """
    sums = counts = None
    objective = 0.0
    for s in stats:
        if sums is None:
            sums, counts = s.sums.copy(), s.counts.copy()
        else:
            sums += s.sums
            counts += s.counts
        objective += s.objective
    if sums is None or counts is None:
        raise ValueError("combine: no shard stats")
    return ShardStats(sums, counts, objective)


class FaissStream:
    """Faiss' ``RandomGenerator(seed)``: std::mt19937 outputs, drawn in blocks.

    numpy's legacy ``RandomState(seed)`` seeds MT19937 exactly as std::mt19937
    does for a 32-bit seed, so the same 32-bit words come out (checked
    against Faiss in the tests).
    """

    def __init__(self, seed: int, block: int = 4096):
        self._state = np.random.RandomState(seed & 0xFFFFFFFF)
        self._block = block
        self._words = np.zeros(0, dtype=np.uint64)
        self._at = 0

    def words(self, m: int) -> np.ndarray:
        """The next ``m`` 32-bit outputs, as uint64."""
        while len(self._words) - self._at < m:
            fresh = self._state.randint(0, 2**32, size=max(self._block, m), dtype=np.uint64)
            self._words = np.concatenate([self._words[self._at :], fresh])
            self._at = 0
        out = self._words[self._at : self._at + m]
        self._at += m
        return out

    def floats(self, m: int) -> np.ndarray:
        """``rand_float()`` m times: ``float(word) / float(2**32 - 1)`` in float32."""
        return self.words(m).astype(np.float32) / np.float32(4294967295.0)

    def unread(self, m: int) -> None:
        """Give back the last ``m`` words drawn (a block read ahead of the loop that needed fewer)."""
        self._at -= m


def faiss_perm_head(n: int, m: int, seed: int) -> np.ndarray:
    """The first ``m`` entries of ``faiss.rand_perm(n, seed)`` (int64), in O(m) memory.

    Faiss' permutation is a forward Fisher-Yates shuffle: step i swaps
    position i with ``i + word % (n - i)``; the first m positions are fixed
    after m steps, and only the positions touched need remembering.
    """
    m = min(m, n)
    words = FaissStream(seed).words(min(m, max(n - 1, 0)))
    moved: dict[int, int] = {}
    head = np.empty(m, dtype=np.int64)
    for i in range(m):
        if i + 1 < n:
            j = i + int(words[i] % np.uint64(n - i))
            head[i] = moved.get(j, j)
            moved[j] = moved.get(i, i)
        else:
            head[i] = moved.get(i, i)
    return head


def split_empty(centroids: np.ndarray, hassign: np.ndarray, n: int) -> int:
    """Faiss' ``split_clusters``: refill every empty cluster by splitting a large one; in place.

    ``centroids`` (k, d) float32 and ``hassign`` (k,) float32 (points per
    cluster) are updated. For each empty cluster ``ci`` in order, candidates
    ``cj = 0, 1, ...`` (cyclically) are drawn with probability
    ``(hassign[cj] - 1) / (n - k)`` until one is taken; ``ci`` gets a copy of
    ``cj`` and both are pushed apart by ``1 +- 1/1024`` on alternate
    coordinates; each gets half of ``cj``'s points. Returns the splits made.
    """
    k = len(hassign)
    empty = np.flatnonzero(hassign == 0)
    if not len(empty):
        return 0
    stream = FaissStream(SPLIT_SEED)
    up = np.float32(1 + SPLIT_EPS)
    down = np.float32(1 - SPLIT_EPS)
    sign = np.arange(centroids.shape[1]) % 2 == 0
    for ci in empty:
        # float p = (hassign[cj] - 1.0) / (float)(n - k), computed in double, stored in float.
        p = ((hassign.astype(np.float64) - 1.0) / np.float64(np.float32(n - k))).astype(np.float32)
        cj = _first_taken(stream, p)
        centroids[ci] = centroids[cj]
        centroids[ci] *= np.where(sign, up, down)
        centroids[cj] *= np.where(sign, down, up)
        hassign[ci] = hassign[cj] / np.float32(2)
        hassign[cj] -= hassign[ci]
    return len(empty)


def _first_taken(stream: FaissStream, p: np.ndarray) -> int:
    """The first candidate ``t % k`` (t = 0, 1, ...) whose draw is below ``p``, consuming draws up to it."""
    k = len(p)
    while True:
        r = stream.floats(k)
        hits = np.flatnonzero(r < p)
        if len(hits):
            stream.unread(k - 1 - int(hits[0]))
            return int(hits[0])


def update(total: ShardStats, previous: np.ndarray, *, spherical: bool = True) -> tuple[np.ndarray, int]:
    """New centroids (k, d) float32 from the summed stats, and the number of splits.

    Means of the assigned points; empty clusters split by :func:`split_empty`
    (``previous`` only gives the shape: Faiss zeroes every centroid before
    summing); unit norm when spherical.
    """
    counts = total.counts
    n = int(counts.sum())
    centroids = np.zeros_like(previous, dtype=np.float32)
    present = counts > 0
    centroids[present] = (total.sums[present] / counts[present, None]).astype(np.float32)
    nsplit = split_empty(centroids, counts.astype(np.float32), n)
    return _post_process(centroids, spherical), nsplit


def _post_process(centroids: np.ndarray, spherical: bool) -> np.ndarray:
    """Faiss' ``post_process_centroids``: unit L2 norm per row when spherical (zero rows stay zero)."""
    if not spherical:
        return centroids
    norms = np.sqrt(np.einsum("ij,ij->i", centroids.astype(np.float64), centroids.astype(np.float64)))
    out = centroids.copy()
    nonzero = norms > 0
    out[nonzero] = (centroids[nonzero] / norms[nonzero, None]).astype(np.float32)
    return out


class Shards(Protocol):
    """The training sample, split: what :func:`train_sharded` asks of the workers holding it."""

    def sizes(self) -> list[int]:
        """Rows per shard; the sample's row ``i`` is row ``i - start`` of the shard holding it."""

    def stats(self, centroids: np.ndarray) -> Iterable[ShardStats]:
        """:func:`partial_stats` of every shard (computed in parallel), in shard order."""

    def take(self, rows: np.ndarray) -> np.ndarray:
        """Rows ``rows`` (global, any order) of the sample, ``(len(rows), d)`` float32, in that order."""


class ArrayShards:
    """Shards held in this process: consecutive slices of one array (tests, one-worker runs)."""

    def __init__(self, x: np.ndarray, count: int, *, spherical: bool, gpu: bool = False):
        self.x = as_points(x)
        bounds = np.linspace(0, len(x), count + 1).astype(np.int64)
        self.parts = [self.x[lo:hi] for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]
        self.spherical, self.gpu = spherical, gpu

    def sizes(self) -> list[int]:
        return [len(p) for p in self.parts]

    def stats(self, centroids: np.ndarray) -> list[ShardStats]:
        return [partial_stats(p, centroids, spherical=self.spherical, gpu=self.gpu) for p in self.parts]

    def take(self, rows: np.ndarray) -> np.ndarray:
        return self.x[np.asarray(rows, dtype=np.int64)]


def train_sharded(
    shards: Shards,
    k: int,
    *,
    n_iter: int = 20,
    spherical: bool = True,
    seed: int = 0,
    n_redo: int = 1,
    init: np.ndarray | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> KMeansResult:
    """Faiss' k-means of the sample held by ``shards``; ``init`` (k, d): given initial centroids.

    ``progress(done, total)`` is called after each iteration (``total =
    n_iter * n_redo``). Requires ``1 <= k <= n`` and ``n <= k *
    max_points_per_centroid`` (the caller samples; Faiss would subsample).
    """
    n = int(sum(shards.sizes()))
    if not 1 <= k <= n:
        raise ValueError(f"k-means needs 1 <= k <= n, got k={k}, n={n}")
    if n == k:  # Faiss' corner case: the points are the centroids, as given
        return KMeansResult(shards.take(np.arange(n)), 0.0, n, False)
    centroids = None if init is None else as_points(init).copy()
    best: tuple[float, np.ndarray] | None = None
    for redo in range(n_redo):
        if init is None:
            centroids = shards.take(faiss_perm_head(n, k, seed + 1 + redo * REDO_STRIDE))
        assert centroids is not None  # given, or drawn above
        centroids = _post_process(centroids, spherical)
        objective = 0.0
        for i in range(n_iter):
            total = combine(shards.stats(centroids))
            objective = float(np.float32(total.objective))
            centroids, _ = update(total, centroids, spherical=spherical)
            if progress is not None:
                progress(redo * n_iter + i + 1, n_redo * n_iter)
        better = best is None or (objective > best[0] if spherical else objective < best[0])
        if better:
            best = (objective, centroids)
    assert best is not None  # n_redo >= 1
    return KMeansResult(best[1], best[0], n, False)
