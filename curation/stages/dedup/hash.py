"""The hash pass of the dedup graph step: codes, Hamming groups with geometric variants.

The coder (PCA fitted on a seeded sample of thumbnails, or pHash) is made
here; codes and pairs come from the graph step's helpers
(:mod:`curation.stages.dedup.shards`), each over its partitions: base
thumbnails (``thumbs.npy``) give one code per image, the only codes searched;
with ``hashing.variants`` each image's variant sources (``sources.npy``,
``(m, S, S) uint8``) are cut into mirrored / cropped / rotated / trimmed
thumbnails, hashed, and used as extra queries against every partition
(memory: one partition's variant codes at a time, ``V * bits / 8`` bytes per
image). The groups are components over the images some pair touches
(:mod:`curation.algorithms.sparse_graph`); the distance of each duplicate to
its kept image is computed by the helper that writes its decision.

With ``hashing.min_correlation`` every pair the Hamming search finds is a
candidate, kept only when the two thumbnails that matched correlate pixel by
pixel (:mod:`curation.algorithms.verify`): the query's (the image's own or
one of its variants', black rotation corners masked out) and the indexed
image's, read back from ``thumbs.npy`` for the candidates only (:class:`Check`,
run by the helper that found the pair).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from curation.stages.dedup.config import HashingConfig
from curation.stages.dedup.descriptors import SOURCES, THUMBS


def coder(pool, cfg: HashingConfig, seed: int, out_dir: Path) -> tuple[Callable, dict[str, Any]]:
    """The function thumbnails ``(B, s, s) uint8`` -> codes, fitted on the pool (``pca``: basis saved)."""
    from curation.algorithms import pca_hash, phash

    info: dict[str, Any] = {"method": cfg.method}
    if cfg.method == "phash":
        return phash.phash_codes, info
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(len(pool), size=min(len(pool), cfg.fit_samples), replace=False))
    thumbs = pool.gather(THUMBS, sample) if len(sample) else np.zeros((0, cfg.thumb_size, cfg.thumb_size))
    basis = pca_hash.fit(pca_hash.features(thumbs), cfg.bits, cfg.thumb_size)
    basis.save(out_dir)
    info.update(fit_samples=len(sample), learned_components=basis.learned)
    return (lambda t: pca_hash.hash_codes(pca_hash.features(t), basis)), info


def hash_info(info: dict[str, Any], cfg: HashingConfig) -> dict[str, Any]:
    """The hash pass's stats: the coder's ``info``, the pair counts and the variants and check used."""
    v = cfg.variants
    if v.enabled:
        info.update(variants=v.spec().count, variant_max_distance=v.max_distance)
    if cfg.min_correlation is not None:
        info.update(min_correlation=cfg.min_correlation)
    else:  # nothing was checked
        for key in ("candidate_pairs", "rejected_pairs"):
            info.pop(key, None)
    return info


class Check:
    """The pixel check of candidate pairs: ``check(a, variant, j)`` -> ``(k,) bool`` pairs kept.

    ``a``: the query thumbnails ``(k, s, s)`` (or base node ids ``(k,)``, read
    from the pool); ``variant`` ``(k,)``: which variant each query is (None:
    base codes, every pixel compared); ``j`` ``(k,)``: the indexed nodes.
    Without ``hashing.min_correlation`` every candidate is kept.
    """

    def __init__(self, pool, cfg: HashingConfig):
        from curation.algorithms.variants import variant_masks

        self.pool, self.tau, self.candidates, self.rejected = pool, cfg.min_correlation, 0, 0
        v = cfg.variants
        self.masks = variant_masks(v.spec(), v.source_size, cfg.thumb_size) if v.enabled else None

    def __call__(self, a: np.ndarray, variant: np.ndarray | None, j: np.ndarray) -> np.ndarray:
        from curation.algorithms.verify import masked_correlation

        if self.tau is None or not len(j):
            return np.ones(len(j), bool)
        query = _thumbs_of(self.pool, a) if variant is None else a
        mask = None
        if variant is not None:
            assert self.masks is not None  # variants are enabled
            mask = self.masks[variant]
        keep = masked_correlation(query, _thumbs_of(self.pool, j), mask) >= self.tau
        self.candidates += len(keep)
        self.rejected += int((~keep).sum())
        return keep


def _thumbs_of(pool, nodes: np.ndarray) -> np.ndarray:
    """Base thumbnails ``(k, s, s) uint8`` of ``nodes`` (any order, repeats allowed)."""
    uniq, inverse = np.unique(nodes, return_inverse=True)
    return pool.gather(THUMBS, uniq)[inverse]


def _variant_codes(pool, cfg: HashingConfig, code, nodes: np.ndarray | None = None):
    """``(nodes, codes (k, V, bits // 8), thumbnails (k, V, s, s))`` per partition, for all pool nodes or
    sorted ``nodes``."""
    from curation.algorithms.variants import variant_thumbnails

    spec = cfg.variants.spec()
    start = 0
    for sources in pool.arrays(SOURCES, nodes):
        ids = np.arange(start, start + len(sources)) if nodes is None else nodes[start : start + len(sources)]
        start += len(sources)
        thumbs = variant_thumbnails(sources, spec, cfg.thumb_size)
        yield ids, code(thumbs.reshape(-1, cfg.thumb_size, cfg.thumb_size)).reshape(len(ids), spec.count, -1), thumbs


def leak_hits(
    coder: Callable, hash_nodes: np.ndarray, hash_rep: np.ndarray, bench_thumbs: np.ndarray, helpers, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """Relative dedup by hash (no descriptor): ``(kept images, benchmark index)`` of the leaks.

    ``bench_thumbs`` ``(m, s, s) uint8``: benchmark thumbnails. A pool image
    whose code, or one of its variants' codes, is within reach of a benchmark
    code links its hash group's kept image (``hash_rep`` of the sorted touched
    ``hash_nodes``, itself elsewhere) to that benchmark (node ``n + j``); a
    component's smallest benchmark is its hit. The pool side is searched by the
    helpers, each over its partitions' code files.
    """
    from curation.algorithms import sparse_graph

    none = np.zeros(0, np.int64)
    if not len(bench_thumbs) or not n:
        return none, none
    bench = coder(bench_thumbs)
    found = helpers.call("hash_leaks", [(bench, helpers.offsets)] * len(helpers.ranges))

    def edges():
        for f in found:
            yield sparse_graph.lookup(hash_nodes, hash_rep, f[:, 0], f[:, 0]), n + f[:, 1]

    return sparse_graph.benchmark_hits(sparse_graph.touched_components(edges), n)
