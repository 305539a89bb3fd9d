"""Exact k-NN edges of a descriptor pool, block by block: the copy-detection graph split over workers.

The pool ``x`` ``(N, d)`` (unit rows, cosine = inner product) is the
concatenation of blocks; block ``j`` holds global ids ``offset_j + arange``.
A worker owns a query block and streams every block of the pool past it,
in storage order (:func:`block_topk`): each block is read once, whole and
sequentially (no per-row random page reads), searched exactly
(``IndexFlatIP``), and the per-block top ``k`` are merged with Faiss'
``ResultHeap``. The top ``k`` of a union lies within the union of the
per-block top ``k``, so the result is the k-NN of one flat index over the
whole pool (same neighbours and scores, up to float rounding and ties).

A worker keeps only what the graph needs (:func:`threshold_edges`): the
edges above the lowest threshold in use and each query's nearest other
vector. Relative dedup searches the benchmark descriptors, which every
worker reads whole (they are few): pool -> benchmark edges are exact per
worker; benchmark -> pool top ``k`` are merged over workers from each
worker's local top ``k`` above the threshold (:func:`merge_candidates`):
an edge of the global top ``k`` above the threshold is in the local top
``k`` of the worker holding its pool end.

Memory per worker, pool of ``N`` descriptors of ``d`` dims in ``P`` equal
blocks, ``k`` neighbours: the query block as float32 (``4 d N / P``), one
streamed block (``4 d N / P``), the heap (``12 k N / P``) and the kept
edges (``20`` bytes each). At ``N = 1.2e9``, ``d = 512``, ``k = 64``,
``P = 1200``: about 5 GB. Work: ``N^2 d`` multiply-adds in all, ``P``
passes over the stored pool (each worker reads it once).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from curation.algorithms.knn import edges, nearest_other


def block_topk(queries: np.ndarray, blocks: Iterable[tuple[int, np.ndarray]], k: int,
               total: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top ``min(k, total)`` of ``queries`` ``(q, d)`` over ``blocks`` of ``(offset, x (m, d))``.

    ``total``: the vectors over all blocks. Returns ``(sims (q, k') float32,
    global ids (q, k') int64)``, best first; id ``-1`` where there is none.
    """
    import faiss

    queries = np.ascontiguousarray(queries, dtype=np.float32)
    k = min(k, total)
    heap = faiss.ResultHeap(len(queries), k, keep_max=True)
    if not len(queries) or k <= 0:
        heap.finalize()
        return heap.D, heap.I
    for offset, x in blocks:
        if not len(x):
            continue
        index = faiss.IndexFlatIP(x.shape[1])
        index.add(np.ascontiguousarray(x, dtype=np.float32))
        sims, ids = index.search(queries, min(k, len(x)))
        heap.add_result(sims, np.where(ids >= 0, ids + offset, -1))
    heap.finalize()
    return heap.D, heap.I


def threshold_edges(start: int, sims: np.ndarray, ids: np.ndarray,
                    threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Edges ``(u, v, sim)`` above ``threshold`` of query rows ``start + r`` (self-matches dropped)."""
    rows = np.arange(start, start + len(ids), dtype=np.int64)[:, None]
    keep = (ids >= 0) & (sims > threshold) & (ids != rows)
    u, v = edges(start, sims, ids, threshold)
    return u, v, sims[keep].astype(np.float32)


def self_graph(queries: np.ndarray, start: int, blocks: Iterable[tuple[int, np.ndarray]], k: int, total: int,
               threshold: float, chunk: int = 65536) -> dict[str, np.ndarray]:
    """One worker's part of the self k-NN graph: queries are pool ids ``start + arange(q)``.

    ``blocks`` must be re-iterable (a list, or an object whose ``__iter__``
    reads the pool again) when there are more than ``chunk`` queries.
    Returns ``u, v`` (int64), ``sim`` (float32): the edges above
    ``threshold``; ``nearest`` (int64, -1: none), ``nearest_sim`` (NaN: none)
    per query.
    """
    parts: dict[str, list[np.ndarray]] = {"u": [], "v": [], "sim": [], "nearest": [], "nearest_sim": []}
    for lo in range(0, len(queries), chunk):
        sims, ids = block_topk(queries[lo : lo + chunk], blocks, k, total)
        u, v, s = threshold_edges(start + lo, sims, ids, threshold)
        near, near_sim = nearest_other(start + lo, sims, ids)
        for name, value in zip(parts, (u, v, s, near, near_sim), strict=True):
            parts[name].append(value)
    empty = {"u": np.int64, "v": np.int64, "sim": np.float32, "nearest": np.int64, "nearest_sim": np.float32}
    return {name: np.concatenate(v) if v else np.zeros(0, empty[name]) for name, v in parts.items()}


def merge_candidates(u: np.ndarray, v: np.ndarray, sim: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The best ``k`` candidates ``v`` of each query ``u`` (ties: smaller ``v``), from workers' local top ``k``."""
    order = np.lexsort((v, -sim, u))
    u, v = u[order], v[order]
    first = np.ones(len(u), bool)
    first[1:] = u[1:] != u[:-1]
    starts = np.maximum.accumulate(np.where(first, np.arange(len(u)), 0))
    keep = np.arange(len(u)) - starts < k
    return u[keep], v[keep]
