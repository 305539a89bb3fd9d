"""k-NN graphs over L2-normalised descriptors (inner product = cosine).

The index comes from :mod:`curation.algorithms.index` (exact ``IndexFlatIP``
for small pools, IVF-Flat or IVF-PQ above ``exact_max``, cloned onto all GPUs
when ``faiss.get_num_gpus() > 0``). On top of it this module

- re-ranks IVF-PQ candidates exactly against the descriptor array itself,
  which may be a memory-mapped float16 file: the index then holds only the
  PQ codes (``pq_m`` bytes per vector) instead of a second float32 copy, the
  difference between 64 GB and 2 TB of RAM per billion 512-d descriptors;
- turns search results, chunk by chunk, into graph edges above a similarity
  threshold and into each vector's nearest other vector.

Queries are processed in chunks, so no all-pairs matrix ever exists.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from curation.algorithms.index import IndexSettings, build_index, resolve_kind

RERANK_BYTES = 1 << 30  # candidate vectors gathered per re-ranking chunk


def bad_rows(x: np.ndarray, min_norm: float = 1e-6) -> np.ndarray:
    """Reason per descriptor row: ``''`` if usable, else ``'nan'`` or ``'zero'``. ``(n,) object``."""
    x = np.asarray(x, dtype=np.float32)
    out = np.full(len(x), "", dtype=object)
    finite = np.isfinite(x).all(axis=1)
    out[~finite] = "nan"
    norms = np.linalg.norm(np.where(np.isfinite(x), x, 0), axis=1)
    out[finite & (norms < min_norm)] = "zero"
    return out


def unit_rows(x: np.ndarray, mean: np.ndarray | None = None) -> np.ndarray:
    """Rows centred on ``mean`` (when given, SSCD's post-processing) and L2-normalised, float32.

    A row that centring would zero keeps its uncentred direction.
    """
    x = np.asarray(x, np.float32)
    out = x / np.linalg.norm(x, axis=1, keepdims=True)
    if mean is not None:
        c = x - mean
        norm = np.linalg.norm(c, axis=1, keepdims=True)
        out = np.where(norm > 1e-6, c / np.maximum(norm, 1e-12), out)
    return out


class Searcher:
    """Cosine k-NN over ``x`` ``(n, d)`` (unit rows; any float dtype, may be a memmap).

    ``floor``: with IVF-PQ re-ranking, candidates whose approximate score is
    at or below it are not re-ranked (nor returned): at a billion images,
    re-ranking every candidate would read ``k * refine_k_factor`` stored
    descriptors per query, while a dedup graph only needs the similar ones.
    """

    def __init__(self, x, config: IndexSettings, seed: int = 0, floor: float | None = None):
        self.x = x
        self.rerank = resolve_kind(len(x), config) == "ivf_pq" and config.refine
        index_config = config.model_copy(update={"refine": False}) if self.rerank else config
        self.index = build_index(x, index_config, "ip", seed)
        self.k_factor = config.refine_k_factor
        self.chunk = config.search_batch
        self.floor = floor

    @property
    def kind(self) -> str:
        return self.index.kind + ("+rerank" if self.rerank else "")

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(sims (q, k) float32, ids (q, k) int64)``, best first; ``k`` capped at n; id -1 if none."""
        k = min(k, self.index.ntotal)
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if k <= 0:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        if not self.rerank:
            return self.index.search(queries, k)
        fetch = min(self.index.ntotal, math.ceil(k * self.k_factor))
        approx, cand = self.index.search(queries, fetch)
        if self.floor is not None:
            cand = np.where(approx > self.floor, cand, -1)
        return rerank(self.x, queries, cand, k)

    def chunks(self, queries, k: int) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """``search`` over ``queries`` (may be a memmap) in chunks: ``(start, sims, ids)``."""
        for start in range(0, len(queries), self.chunk):
            sims, ids = self.search(queries[start : start + self.chunk], k)
            yield start, sims, ids


def rerank(x, queries: np.ndarray, cand: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` of candidate ids ``(q, c)`` by inner product with ``x[cand]``."""
    q, c = cand.shape
    sims = np.full((q, k), -np.inf, dtype=np.float32)
    ids = np.full((q, k), -1, dtype=np.int64)
    step = max(1, RERANK_BYTES // max(1, c * x.shape[1] * 8))  # gathered rows and queries, float32
    for start in range(0, q, step):
        ids_c = cand[start : start + step]
        valid = ids_c >= 0
        score = np.full(ids_c.shape, -np.inf, dtype=np.float32)
        rows, cols = np.nonzero(valid)
        # Only valid candidates are read, in storage order (kinder to a memory-mapped file).
        order = np.argsort(ids_c[rows, cols], kind="stable")
        rows, cols = rows[order], cols[order]
        vecs = np.asarray(x[ids_c[rows, cols]], dtype=np.float32)
        score[rows, cols] = np.einsum("cd,cd->c", vecs, queries[start : start + step][rows])
        top = np.argsort(-score, axis=1, kind="stable")[:, :k]
        at = np.arange(len(ids_c))[:, None], top
        sims[start : start + step] = score[at]
        ids[start : start + step] = np.where(np.isfinite(score[at]), ids_c[at], -1)
    return sims, ids


def edges(
    start: int, sims: np.ndarray, ids: np.ndarray, threshold: float, self_ids: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Edges ``(u, v)`` (int64) with similarity ``> threshold`` from one search chunk.

    Query row ``r`` is node ``start + r``; with ``self_ids`` the queries are
    the indexed vectors themselves and self-matches are dropped.
    """
    rows = np.arange(start, start + len(ids), dtype=np.int64)[:, None]
    keep = (ids >= 0) & (sims > threshold)
    if self_ids:
        keep &= ids != rows
    return np.broadcast_to(rows, ids.shape)[keep], ids[keep].astype(np.int64)


def nearest_other(start: int, sims: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per query row its most similar *other* vector: ``(ids (c,) int64, sims (c,) float32)``.

    -1 and NaN where there is none.
    """
    n = len(ids)
    near = np.full(n, -1, dtype=np.int64)
    sim = np.full(n, np.nan, dtype=np.float32)
    if ids.size == 0:
        return near, sim
    rows = np.arange(start, start + n, dtype=np.int64)[:, None]
    valid = (ids >= 0) & (ids != rows)
    pick = np.arange(n), valid.argmax(axis=1)  # results are best first
    has = valid[pick]
    near[has] = ids[pick][has]
    sim[has] = sims[pick][has]
    return near, sim


@dataclass
class CopyGraph:
    """Components of the copy-detection graphs (see :func:`copy_graph`).

    ``labels`` (n,): components of pool edges above the self threshold.
    ``leak_labels`` (n + m,): components of pool and benchmark edges above the
    relative threshold (benchmark ``j`` is node ``n + j``; empty without
    benchmarks). ``nearest`` (n,) / ``nearest_sim`` (n,): each pool vector's
    most similar other pool vector (-1 / NaN if none). ``kind``: the index.
    """

    labels: np.ndarray
    leak_labels: np.ndarray
    nearest: np.ndarray
    nearest_sim: np.ndarray
    kind: str


def copy_graph(
    x,
    y: np.ndarray,
    config: IndexSettings,
    k: int,
    threshold: float,
    leak_k: int,
    leak_threshold: float,
    seed: int = 0,
    floor: float | None = None,
) -> CopyGraph:
    """Self-dedup and leak components of pool ``x`` ``(n, d)`` and benchmarks ``y`` ``(m, d)``.

    The pool's k-NN lists (one search) give both the self edges
    (``> threshold``) and the pool-pool leak edges (``> leak_threshold``);
    benchmark -> pool and pool -> benchmark searches (``leak_k`` each) add the
    cross edges. Edges go chunk by chunk into union-find structures.
    ``floor``: see :class:`Searcher` (IVF-PQ only).
    """
    from curation.algorithms import components as cc

    n, m = len(x), len(y)
    if n == 0:
        empty = np.zeros(0, np.int64)
        return CopyGraph(empty, empty, empty, np.zeros(0, np.float32), "none")
    searcher = Searcher(x, config, seed, floor)
    parent, leak = cc.new_parent(n), cc.new_parent(n + m if m else 0)
    nearest = np.full(n, -1, np.int64)
    nearest_sim = np.full(n, np.nan, np.float32)
    for start, sims, ids in searcher.chunks(x, k):
        cc.union(parent, *edges(start, sims, ids, threshold))
        nearest[start : start + len(ids)], nearest_sim[start : start + len(ids)] = nearest_other(start, sims, ids)
        if m:
            cc.union(leak, *edges(start, sims, ids, leak_threshold))
    if m:
        for start, sims, ids in searcher.chunks(y, leak_k):
            u, v = edges(start, sims, ids, leak_threshold, self_ids=False)
            cc.union(leak, u + n, v)
        for start, sims, ids in Searcher(y, config, seed, floor).chunks(x, leak_k):
            u, v = edges(start, sims, ids, leak_threshold, self_ids=False)
            cc.union(leak, u, v + n)
    return CopyGraph(cc.labels(parent), cc.labels(leak), nearest, nearest_sim, searcher.kind)
