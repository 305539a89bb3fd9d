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

At pool scale the search of each block is restricted to inverted lists
(:class:`Coarse`, Faiss ``big_batch_search`` style): one coarse quantizer is
trained once on a sample of the pool and shared by every worker; each query
is assigned to its ``nprobe`` nearest lists once, and each streamed block is
bucketed into an ``IndexIVFFlat`` over those lists and searched with the
preassigned lists. Scores are still exact inner products of the stored
vectors (no compression, no re-ranking, no random reads); recall is that of
IVF-Flat with the same lists and ``nprobe`` (``nprobe = nlist``: exactly the
flat result). Work drops by about ``nlist / nprobe``.

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

A worker granted a GPU runs the same code with every Faiss index copied to
that GPU just before it is searched (:class:`Device`, :func:`on_gpu`): the
blocks, their lists and the merge are built on the host as on the CPU path;
only where the inner products are computed changes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

import numpy as np

from curation.algorithms.knn import edges, nearest_other


def on_gpu(granted: float) -> bool:
    """Whether a worker's searches run on a GPU: exactly when it was granted one and Faiss sees one
    (a CPU-only Faiss, or a worker without a grant, stays on the CPU)."""
    from curation.algorithms.kmeans import use_gpu

    return granted > 0 and use_gpu("auto")


class Device:
    """Where the searches run: the CPU, or (``gpu``) the first GPU this process sees.

    A Ray worker granted one GPU sees it as device 0 (Ray sets
    ``CUDA_VISIBLE_DEVICES``). Indexes are always built on the host;
    :meth:`place` copies one to the GPU (Faiss' ``index_cpu_to_gpu``) or
    returns it as it is.
    """

    def __init__(self, gpu: bool = False):
        self.gpu = gpu
        self._resources: Any = None  # faiss.StandardGpuResources once a GPU index is placed

    def place(self, index):
        if not self.gpu:
            return index
        import faiss

        if self._resources is None:  # one set of GPU buffers per worker, reused by every block
            self._resources = faiss.StandardGpuResources()
        return faiss.index_cpu_to_gpu(self._resources, 0, index)


CPU = Device()


class Sliceable(Protocol):
    """Query rows read on demand: ``len`` and ``[lo:hi]`` giving a ``(hi - lo, d)`` array."""

    def __len__(self) -> int: ...

    def __getitem__(self, rows: slice) -> np.ndarray: ...


class Coarse:
    """A shared coarse quantizer: ``centroids`` ``(nlist, d)`` float32 and the lists probed per query."""

    def __init__(self, centroids: np.ndarray, nprobe: int, device: Device = CPU):
        import faiss

        self.centroids = np.ascontiguousarray(centroids, dtype=np.float32)
        self.nlist, dim = self.centroids.shape
        self.nprobe = max(1, min(nprobe, self.nlist))
        self.device = device
        # The host copy is every block's IVF quantizer; the placed one assigns queries and vectors.
        self.host = faiss.IndexFlatIP(dim)
        self.host.add(self.centroids)
        self.quantizer = device.place(self.host)

    @classmethod
    def train(cls, sample: np.ndarray, nlist: int, nprobe: int, seed: int = 0) -> Coarse:
        """Spherical k-means on ``sample`` ``(s, d)`` (unit rows), ``nlist`` capped at ``s``."""
        import faiss

        sample = np.ascontiguousarray(sample, dtype=np.float32)
        nlist = max(1, min(nlist, len(sample)))
        km = faiss.Kmeans(sample.shape[1], nlist, niter=20, seed=seed, spherical=True)
        km.train(sample)
        assert km.centroids is not None  # set by train
        return cls(km.centroids, nprobe)

    def assign(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(similarities, list ids)`` ``(q, nprobe)`` of each query's probed lists."""
        return _search(self.quantizer, queries, self.nprobe, None)

    def lists(self, x: np.ndarray) -> np.ndarray:
        """The list ``(m,)`` int64 of each stored vector (its nearest centroid): computed once per vector."""
        return self.quantizer.search(np.ascontiguousarray(x, dtype=np.float32), 1)[1][:, 0].copy()

    def searcher(self, x: np.ndarray, lists: np.ndarray | None = None):
        """An ``IndexIVFFlat`` over block ``x`` with these lists (built per block, dropped after).

        ``lists``: the block's precomputed :meth:`lists` (the block is then only copied into its lists).
        """
        import faiss
        from faiss.contrib.ivf_tools import add_preassigned

        index = faiss.IndexIVFFlat(self.host, x.shape[1], self.nlist, faiss.METRIC_INNER_PRODUCT)
        if lists is None:
            lists = self.lists(x)
        add_preassigned(index, x, np.ascontiguousarray(lists, dtype=np.int64))
        index.nprobe = self.nprobe
        return self.device.place(index)


def block_topk(
    queries: np.ndarray,
    blocks: Iterable[tuple],
    k: int,
    total: int,
    coarse: Coarse | None = None,
    device: Device = CPU,
) -> tuple[np.ndarray, np.ndarray]:
    """Top ``min(k, total)`` of ``queries`` ``(q, d)`` over ``blocks`` of ``(offset, x (m, d)[, lists (m,)])``.

    Exact without ``coarse``; with it, over the probed lists only (exact
    scores; ``coarse.device`` is then where it runs, else ``device``).
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
    probe = coarse.assign(queries) if coarse is not None else None
    for offset, x, *lists in blocks:
        if not len(x):
            continue
        x = np.ascontiguousarray(x, dtype=np.float32)
        if coarse is None:
            index = faiss.IndexFlatIP(x.shape[1])
            index.add(x)
            index = device.place(index)
        else:
            index = coarse.searcher(x, *lists)
        sims, ids = _search(index, queries, min(k, len(x)), probe)
        heap.add_result(sims, np.where(ids >= 0, ids + offset, -1))
    heap.finalize()
    return heap.D, heap.I


# Query rows per Faiss search call: what a GPU holds of a query block (queries and results), whatever its size.
SEARCH_ROWS = 65536


def _search(index, queries: np.ndarray, k: int, probe: tuple | None) -> tuple[np.ndarray, np.ndarray]:
    """``index`` searched by ``SEARCH_ROWS`` queries at a time (with their preassigned ``probe`` lists when
    given), results stacked: each query's result is its own, so slicing changes nothing but the memory."""
    parts = []
    for lo in range(0, len(queries), SEARCH_ROWS):
        rows = slice(lo, lo + SEARCH_ROWS)
        if probe is None:
            parts.append(index.search(queries[rows], k))
        else:
            parts.append(index.search_preassigned(queries[rows], k, probe[1][rows], probe[0][rows]))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def threshold_edges(
    start: int, sims: np.ndarray, ids: np.ndarray, threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Edges ``(u, v, sim)`` above ``threshold`` of query rows ``start + r`` (self-matches dropped)."""
    rows = np.arange(start, start + len(ids), dtype=np.int64)[:, None]
    keep = (ids >= 0) & (sims > threshold) & (ids != rows)
    u, v = edges(start, sims, ids, threshold)
    return u, v, sims[keep].astype(np.float32)


def self_graph(
    queries: np.ndarray | Sliceable,
    start: int,
    blocks: Iterable[tuple],
    k: int,
    total: int,
    threshold: float,
    chunk: int = 65536,
    coarse: Coarse | None = None,
    device: Device = CPU,
) -> dict[str, np.ndarray]:
    """One worker's part of the self k-NN graph: queries are pool ids ``start + arange(q)``.

    ``queries``: an array, or any sliceable ``(q, d)`` whose slices are read
    on demand (only ``chunk`` query rows are held as float32 at a time).
    ``blocks`` must be re-iterable (a list, or an object whose ``__iter__``
    reads the pool again) when there are more than ``chunk`` queries: each
    chunk streams every block again.
    Returns ``u, v`` (int64), ``sim`` (float32): the edges above
    ``threshold``; ``nearest`` (int64, -1: none), ``nearest_sim`` (NaN: none)
    per query.
    """
    parts: dict[str, list[np.ndarray]] = {"u": [], "v": [], "sim": [], "nearest": [], "nearest_sim": []}
    for lo in range(0, len(queries), chunk):
        sims, ids = block_topk(queries[lo : lo + chunk], blocks, k, total, coarse, device)
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
