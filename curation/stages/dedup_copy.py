"""The copy-detection pass of the dedup graph step: self-dedup, then relative dedup on what it keeps.

Runs only with a descriptor (``DedupConfig.describes``). Self-dedup links the
hash survivors' descriptors above ``copy_dedup.threshold`` in a k-NN graph;
relative dedup then searches the images self-dedup keeps (not the ones it is
about to drop, as in the paper) against the benchmark images at
``relative.threshold``. Without a descriptor, benchmarks are matched by hash
(``dedup_hash.leak_labels``).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class _CopyResult:
    """Copy and leak components in survivor index space (see ``components.decide``)."""

    labels: np.ndarray  # (n1,)
    leak_labels: np.ndarray  # (n1 + m,), empty without benchmarks
    nearest: np.ndarray  # (n1,) survivor index of the most similar other survivor, -1 if none
    nearest_sim: np.ndarray  # (n1,) float32, NaN if none
    similarity: np.ndarray  # (n1,) float32 cosine to the kept image of the copy component, NaN if kept
    bench_names: list[str]
    bench_info: dict
    kind: str


def copy_pass(step: Any, pool: Any, survivors: np.ndarray, rank: np.ndarray, out_dir: Path,
               timer: Any) -> _CopyResult:
    """Self-dedup over the hash survivors, then relative dedup over what self-dedup keeps (as in the paper)."""
    from curation.algorithms import components as cc
    from curation.algorithms import knn
    from curation.stages.dedup_descriptors import pool_descriptors

    cfg, n1 = step.cfg, len(survivors)
    none = _CopyResult(np.arange(n1), np.zeros(0, np.int64), np.full(n1, -1, np.int64),
                       np.full(n1, np.nan, np.float32), np.full(n1, np.nan, np.float32), [], {}, "none")
    if not cfg.describes:
        return none
    c, r = cfg.copy_dedup, cfg.relative
    x, mean = pool_descriptors(pool, survivors, cfg.descriptor.center, out_dir / "pool-descriptors.npy")
    timer.lap("descriptors")
    out = none
    if cfg.copy_on:
        floor = None if c.rerank_margin is None else c.threshold - c.rerank_margin
        graph = knn.copy_graph(x, x[:0], c.index, c.k, c.threshold, 0, 1.0, step.ctx.seed, floor)  # no benchmarks
        rep = cc.representatives(graph.labels, rank)
        sim = np.full(n1, np.nan, np.float32)
        dup = np.flatnonzero(rep != np.arange(n1))
        for lo in range(0, len(dup), 65536):  # direct cosine to the kept image, chunk by chunk
            i, j = dup[lo : lo + 65536], rep[dup[lo : lo + 65536]]
            sim[i] = np.einsum("nd,nd->n", np.asarray(x[i], np.float32), np.asarray(x[j], np.float32))
        out = _CopyResult(graph.labels, none.leak_labels, graph.nearest, graph.nearest_sim, sim, [], {}, graph.kind)
        timer.lap("copy_graph")
    if not cfg.relative_on:
        return out
    kept = np.flatnonzero(cc.representatives(out.labels, rank) == np.arange(n1))
    names, y, info = step._benchmarks(mean, x.shape[1])
    xk, _ = pool_descriptors(pool, survivors[kept], cfg.descriptor.center, out_dir / "kept-descriptors.npy", mean)
    floor = None if c.rerank_margin is None else r.threshold - c.rerank_margin
    leak = knn.copy_graph(xk, y, c.index, r.k, r.threshold, r.k, r.threshold, step.ctx.seed, floor)
    # Back to survivor space: survivors that self-dedup drops stay singletons.
    labels = np.arange(n1 + len(y), dtype=np.int64)
    nodes = np.concatenate([kept, n1 + np.arange(len(y))])
    if len(leak.leak_labels):
        labels[nodes] = nodes[leak.leak_labels]
    out.leak_labels, out.bench_names, out.bench_info = labels, names, info
    timer.lap("relative_graph")
    return out


def benchmark_thumbs(step: Any) -> tuple[list[str], np.ndarray, dict]:
    """Names and hash thumbnails ``(m, s, s)`` of the benchmark images (relative dedup by hash)."""
    from curation.models.sscd import describe
    from curation.sources import iter_images
    from curation.stages.dedup_descriptors import load_descriptor_model

    _, spec, _ = load_descriptor_model(step.cfg, step.ctx.seed)
    s = step.cfg.hashing.thumb_size
    names, parts, info = [], [np.zeros((0, s, s), np.uint8)], {}
    for bench in step.cfg.relative.benchmarks:
        stream, before = iter_images(bench), len(names)
        failed = 0
        while chunk := list(itertools.islice(stream, 256)):
            thumbs, _, _, _, reasons, _ = describe([d for _, d, _ in chunk], None, spec)
            names += [f"{bench.name}:{k}" for (k, _, _), why in zip(chunk, reasons) if why is None]
            parts.append(thumbs)
            failed += len(chunk) - len(thumbs)
        info[bench.name] = {"images": len(names) - before, "failed": failed}
    return names, np.concatenate(parts), info
