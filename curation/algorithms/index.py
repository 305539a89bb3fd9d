"""Faiss index factory for nearest-neighbour search over pool embeddings.

Exact ``IndexFlat`` search for pools up to ``exact_max`` vectors; above that
an inverted-file index: ``IVF-Flat``, or ``IVF-PQ`` (what the DINOv2 paper
used) whose compressed candidates are re-ranked exactly by
``IndexRefineFlat``, because PQ codes alone rank near neighbours poorly.
When ``faiss.get_num_gpus() > 0`` the trained index is cloned onto every GPU
(the exact re-ranking stays on the host, reading the same vectors).

faiss is imported lazily: importing this module stays cheap.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

import numpy as np

Metric = Literal["ip", "l2"]

# Sub-quantizer counts that GPU IVF-PQ supports; the CPU supports any divisor.
_GPU_PQ_M = (1, 2, 3, 4, 8, 12, 16, 20, 24, 28, 32, 40, 48, 56, 64, 96)
# Scalar quantisers of the IVF-SQ kinds, and the lossy kinds that re-ranking refines.
_SQ_TYPES = {"ivf_sq8": "QT_8bit", "ivf_fp16": "QT_fp16"}
_REFINED = ("ivf_pq", "ivf_sq8")
# faiss warns below 39 training points per centroid and subsamples above 256.
_MIN_POINTS_PER_LIST = 39
_MAX_POINTS_PER_LIST = 256


S = TypeVar("S", bound="IndexSettings")


class IndexSettings(Protocol):
    """The settings an index is built with (the config sections embed
    ``curation.index_config.IndexConfig``, which has these fields, their
    defaults and their descriptions)."""

    kind: str
    exact_max: int
    nlist: int | None
    nprobe: int
    pq_m: int | None
    pq_bits: int
    refine: bool
    refine_k_factor: float
    use_gpu: bool | None
    search_batch: int

    def model_copy(self: S, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> S:
        """A copy with ``update`` applied (the config sections are pydantic models)."""
        ...


@dataclass
class KnnIndex:
    """A built index plus what it was built from.

    ``search`` returns ``(scores float32 (q, k), ids int64 (q, k))``: inner
    products (``ip``) or squared L2 distances (``l2``), best first; id ``-1``
    where the index holds fewer than ``k`` vectors.
    """

    index: Any
    kind: str
    metric: Metric
    ntotal: int
    on_gpu: bool
    search_batch: int

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        n = queries.shape[0]
        scores = np.empty((n, k), dtype=np.float32)
        ids = np.empty((n, k), dtype=np.int64)
        for start in range(0, n, self.search_batch):
            stop = min(n, start + self.search_batch)
            scores[start:stop], ids[start:stop] = self.index.search(queries[start:stop], k)
        return scores, ids


def resolve_kind(n: int, config: IndexSettings) -> str:
    if config.kind != "auto":
        return config.kind
    return "flat" if n <= config.exact_max else "ivf_pq"


def default_nlist(n: int) -> int:
    """About 4*sqrt(n) lists, but never fewer than 39 training points per list."""
    return max(1, min(int(4 * math.sqrt(n)), n // _MIN_POINTS_PER_LIST))


def default_pq_m(d: int) -> int:
    fits = [m for m in _GPU_PQ_M if d % m == 0 and m <= max(1, d // 4)]
    return max(fits) if fits else 1


def gpu_count(config: IndexSettings) -> int:
    import faiss

    from curation.errors import ConfigError

    available = faiss.get_num_gpus()
    if config.use_gpu and available == 0:
        raise ConfigError("index.use_gpu: true, but faiss sees no GPU (is faiss-gpu installed?)")
    return 0 if config.use_gpu is False else available


def build_index(
    vectors: np.ndarray, config: IndexSettings, metric: Metric = "ip", seed: int = 0, chunk: int = 1 << 18
) -> KnnIndex:
    """Index ``vectors`` (n, d) for ``metric`` search.

    ``vectors`` may be float16 or a memory map: they are added ``chunk`` rows
    at a time. Pass L2-normalised vectors with ``ip`` for cosine similarity.
    IVF training uses a seeded sample of at most 256 points per list (coarse
    k-means on the GPUs when there are some), so a rebuild from the same
    vectors and seed gives the same index.
    """
    import faiss

    n, d = vectors.shape
    kind = resolve_kind(n, config)
    gpus = gpu_count(config)
    faiss_metric = faiss.METRIC_INNER_PRODUCT if metric == "ip" else faiss.METRIC_L2
    if kind == "flat" or n == 0:
        kind, index = "flat", faiss.IndexFlat(d, faiss_metric)
        index = _to_gpus(index) if gpus else index
    else:
        index = _trained_ivf(vectors, kind, d, faiss_metric, config, gpus, seed)
    for start in range(0, n, chunk):
        index.add(np.ascontiguousarray(vectors[start : start + chunk], dtype=np.float32))
    return KnnIndex(index, kind, metric, n, bool(gpus), config.search_batch)


def _trained_ivf(vectors, kind: str, d: int, faiss_metric, config: IndexSettings, gpus: int, seed: int):
    """A trained, empty IVF index, on the GPUs if any, wrapped for refinement."""
    import faiss

    from curation.errors import ConfigError

    nlist = min(config.nlist or default_nlist(vectors.shape[0]), vectors.shape[0])
    quantizer = faiss.IndexFlat(d, faiss_metric)
    if kind == "ivf_flat":
        base: faiss.IndexIVF = faiss.IndexIVFFlat(quantizer, d, nlist, faiss_metric)
    elif kind in _SQ_TYPES:
        qtype = getattr(faiss.ScalarQuantizer, _SQ_TYPES[kind])
        base = faiss.IndexIVFScalarQuantizer(quantizer, d, nlist, qtype, faiss_metric)
    else:
        pq_m = config.pq_m or default_pq_m(d)
        if d % pq_m:
            raise ConfigError(f"index.pq_m: {pq_m} does not divide the embedding dimension {d}")
        base = faiss.IndexIVFPQ(quantizer, d, nlist, pq_m, config.pq_bits, faiss_metric)
    base.cp.seed = seed
    if gpus:
        # Coarse k-means on the GPUs (faiss's documented idiom).
        base.clustering_index = faiss.index_cpu_to_all_gpus(faiss.IndexFlat(d, faiss_metric))
    base.train(_training_sample(vectors, nlist, seed))
    if gpus:
        base = _to_gpus(base)
    _set_nprobe(base, min(config.nprobe, nlist), bool(gpus))
    if kind in _REFINED and config.refine:
        # Vectors added from now on go to the (GPU) base and to a host flat
        # index, which re-ranks refine_k_factor * k candidates exactly.
        refined = faiss.IndexRefineFlat(base)
        refined.k_factor = config.refine_k_factor
        return refined
    return base


def _to_gpus(index):
    """Clone onto every GPU, sharded so that memory scales with the GPU count."""
    import faiss

    options = faiss.GpuMultipleClonerOptions()
    options.shard = True
    return faiss.index_cpu_to_all_gpus(index, co=options)


def _set_nprobe(index, nprobe: int, on_gpu: bool) -> None:
    import faiss

    if on_gpu:
        faiss.GpuParameterSpace().set_index_parameter(index, "nprobe", nprobe)
    else:
        index.nprobe = nprobe


def _training_sample(vectors: np.ndarray, nlist: int, seed: int) -> np.ndarray:
    n = vectors.shape[0]
    size = min(n, _MAX_POINTS_PER_LIST * nlist)
    if size == n:
        return np.ascontiguousarray(vectors, dtype=np.float32)
    rows = np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))
    return np.ascontiguousarray(vectors[rows], dtype=np.float32)


def normalize(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero); returns a new float32 array."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, np.float32(1e-12))


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of the true ``k`` neighbours (q, k) present in ``found`` (q, k')."""
    if truth.size == 0:
        return 1.0
    hits = sum(len(np.intersect1d(f[f >= 0], t[t >= 0])) for f, t in zip(found, truth, strict=False))
    return hits / max(1, int((truth >= 0).sum()))
