"""A pool index split over shards: each holds a contiguous range of the pool.

The pool is the concatenation of its partitions (ascending); a shard holds
the vectors of a contiguous range of partitions and numbers them locally
``0..n_s-1``. Global id = shard offset + local id, so global ids follow
pool order whatever the shard count. Queries go to every shard in batches;
each shard returns its top ``k`` and the lists are merged with Faiss'
``ResultHeap``. An exact (flat) sharded search therefore returns the same
neighbours and scores as one ``IndexFlat`` over the whole pool: the top
``k`` of a union is within the union of the per-part top ``k``.

Memory: a shard holds its index (flat: ``4 d`` bytes per vector; IVF-PQ
with exact re-ranking: ``4 d + pq_m`` bytes) plus one chunk of rows while
building; a query batch costs ``shards x batch x k x 12`` bytes in the
merging process. With ``s`` shards the largest process holds about
``n / s`` vectors: at 744M x 1280 fp32 (3.8 TB), 160 shards hold 24 GB each.

Shards are plain objects (:class:`IndexShard`); who runs them (Ray actors,
this process) is the caller's business: :class:`ShardedIndex` only needs a
group with ``call(method, args_per_shard) -> results``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from curation.algorithms.index import KnnIndex, Metric


def shard_ranges(counts: Sequence[int], shards: int) -> list[tuple[int, int]]:
    """Split positions ``0..len(counts)`` into at most ``shards`` contiguous, non-empty ranges.

    Ranges ``[lo, hi)`` of positions (partitions), balanced by the sum of
    ``counts`` (rows): boundary ``i`` is the first position whose prefix
    sum reaches ``i / shards`` of the total.
    """
    n = len(counts)
    shards = max(1, min(shards, n))
    if n == 0:
        return []
    prefix = np.cumsum(np.asarray(counts, dtype=np.float64))
    total = prefix[-1] if prefix[-1] > 0 else float(n)
    if prefix[-1] <= 0:
        prefix = np.arange(1, n + 1, dtype=np.float64)
    cuts = [0]
    for i in range(1, shards):
        cut = int(np.searchsorted(prefix, total * i / shards, side="left")) + 1
        cut = min(max(cut, cuts[-1] + 1), n - (shards - i))
        cuts.append(cut)
    cuts.append(n)
    return [(lo, hi) for lo, hi in zip(cuts[:-1], cuts[1:], strict=False) if hi > lo]


def merge_topk(parts: list[tuple[np.ndarray, np.ndarray]], k: int, metric: str = "ip") -> tuple[np.ndarray, np.ndarray]:
    """Merge per-shard ``(scores (q, k_i), global ids (q, k_i))`` into the best ``k``.

    Faiss' ``ResultHeap`` keeps the largest inner products (``ip``) or the
    smallest distances (``l2``); slots without a result have id ``-1``.
    """
    import faiss

    nq = parts[0][0].shape[0] if parts else 0
    heap = faiss.ResultHeap(nq, k, keep_max=(metric == "ip"))
    for scores, ids in parts:
        if scores.shape[1]:
            heap.add_result(np.ascontiguousarray(scores, dtype=np.float32), np.ascontiguousarray(ids, dtype=np.int64))
    heap.finalize()
    return heap.D, heap.I


class RowsView:
    """Rows of several arrays (memory maps) read as one ``(n, d)`` array, lazily.

    ``parts`` are ``(array (m_i, d), rows (r_i,))``: the view is the
    concatenation of ``array_i[rows_i]``. Slices and sorted index arrays
    read only what they ask for, so an index is built chunk by chunk
    without the shard's vectors ever being copied whole.
    """

    def __init__(self, parts: list[tuple[np.ndarray, np.ndarray]], dim: int):
        self.parts = parts
        self.starts = np.cumsum([0] + [len(rows) for _, rows in parts])
        self.shape = (int(self.starts[-1]), dim)
        self.dtype = np.dtype(np.float32)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, item) -> np.ndarray:
        if isinstance(item, slice):
            item = np.arange(*item.indices(self.shape[0]))
        item = np.asarray(item, dtype=np.int64)
        out = np.empty((item.shape[0], self.shape[1]), dtype=np.float32)
        which = np.searchsorted(self.starts, item, side="right") - 1
        for i in np.unique(which):
            at = np.flatnonzero(which == i)
            array, rows = self.parts[i]
            out[at] = array[rows[item[at] - self.starts[i]]]
        return out

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self[0 : self.shape[0]]
        return out if dtype is None else out.astype(dtype)


class IndexShard:
    """One shard: a Faiss index over ``vectors`` (a :class:`RowsView` or array).

    ``search`` returns local ids; ``take`` reads vectors by local id.
    """

    def __init__(self, vectors: Any, config: Any, metric: Metric = "ip", seed: int = 0):
        from curation.algorithms.index import build_index

        started = time.perf_counter()
        self.vectors = vectors
        self.metric = metric
        self.index: KnnIndex | None = build_index(vectors, config, metric, seed)
        self.timings = {"build_s": time.perf_counter() - started, "search_s": 0.0, "queries": 0}

    def stats(self) -> dict[str, Any]:
        """Vectors held, seconds spent building and searching, queries answered."""
        return {"vectors": self.size, **self.timings}

    @property
    def size(self) -> int:
        return int(self.vectors.shape[0])

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, self.size)
        if k == 0:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        if self.index is None:
            raise RuntimeError("this shard holds vectors only: it was built without an index")
        started = time.perf_counter()
        out = self.index.search(queries, k)
        self.timings["search_s"] += time.perf_counter() - started
        self.timings["queries"] += len(queries)
        return out

    def take(self, ids: np.ndarray) -> np.ndarray:
        """Vectors ``(len(ids), d)`` float32 at local ``ids``."""
        order = np.argsort(ids, kind="stable")
        out = np.empty((len(ids), self.vectors.shape[1]), np.float32)
        out[order] = self.vectors[np.asarray(ids)[order]]
        return out


@dataclass
class ShardedIndex:
    """Search and gather over a group of shards, in global ids.

    ``group.call(method, [args of shard 0, args of shard 1, ...])`` runs a
    method of every shard (in parallel when the shards are actors);
    ``sizes`` are the shards' vector counts, in pool order.
    """

    group: Any
    sizes: list[int]
    metric: str = "ip"
    batch: int = 65536

    @property
    def offsets(self) -> np.ndarray:
        return np.cumsum([0] + list(self.sizes))

    @property
    def ntotal(self) -> int:
        return int(sum(self.sizes))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(scores (q, k'), global ids (q, k'))`` with ``k' = min(k, ntotal)``, best first."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        k = min(k, self.ntotal)
        scores = np.empty((len(queries), k), np.float32)
        ids = np.empty((len(queries), k), np.int64)
        offsets = self.offsets
        for start in range(0, len(queries), self.batch):
            block = queries[start : start + self.batch]
            parts = self.group.call("search", [(block, k)] * len(self.sizes))
            shifted = [(s, np.where(i >= 0, i + offsets[j], -1)) for j, (s, i) in enumerate(parts)]
            scores[start : start + len(block)], ids[start : start + len(block)] = merge_topk(shifted, k, self.metric)
        return scores, ids

    def take(self, ids: np.ndarray) -> np.ndarray:
        """Vectors ``(len(ids), d)`` float32 at global ``ids``, gathered from their shards."""
        ids = np.asarray(ids, dtype=np.int64)
        offsets = self.offsets
        shard = np.searchsorted(offsets, ids, side="right") - 1
        args = [(ids[shard == j] - offsets[j],) for j in range(len(self.sizes))]
        parts = self.group.call("take", args)
        out = None
        for j, block in enumerate(parts):
            if out is None:
                out = np.empty((len(ids), block.shape[1]), np.float32)
            out[shard == j] = block
        return out if out is not None else np.zeros((0, 0), np.float32)


class Gather:
    """``pool[ids]`` over a :class:`ShardedIndex`: what the retrieval rules index into."""

    def __init__(self, take: Callable[[np.ndarray], np.ndarray]):
        self._take = take

    def __getitem__(self, ids) -> np.ndarray:
        return self._take(np.asarray(ids, dtype=np.int64))
