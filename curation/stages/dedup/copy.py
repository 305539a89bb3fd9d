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
from dataclasses import dataclass, field
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
    edges: dict = field(default_factory=dict)  # edges kept per graph, and per survivor


def copy_pass(step: Any, pool: Any, helpers: Any, survivors: np.ndarray, rank: np.ndarray, timer: Any) -> _CopyResult:
    """Self-dedup over the hash survivors, then relative dedup over what self-dedup keeps (as in the paper).

    The k-NN searches run in the graph step's helpers, each over its range
    of partitions against every partition's descriptors, streamed
    (:mod:`curation.stages.dedup.passes`); here only edges are unioned.
    """
    from curation.algorithms import components as cc
    from curation.stages.dedup import passes as dedup_passes

    cfg, n1 = step.cfg, len(survivors)
    none = _CopyResult(
        np.arange(n1),
        np.zeros(0, np.int64),
        np.full(n1, -1, np.int64),
        np.full(n1, np.nan, np.float32),
        np.full(n1, np.nan, np.float32),
        [],
        {},
        "none",
    )
    if not cfg.describes or not n1:
        return none
    c, r = cfg.copy_dedup, cfg.relative
    at = dedup_passes.units(helpers, survivors, cfg.descriptor.center, c.index, step.ctx.seed)
    timer.lap("descriptors")
    out = none
    if cfg.copy_on:
        graph = dedup_passes.self_edges(helpers, at, c.k, c.threshold)
        rep = cc.representatives(graph["labels"], rank)
        sim = np.full(n1, np.nan, np.float32)
        dup = np.flatnonzero(rep != np.arange(n1))
        sim[dup] = dedup_passes.similarity(helpers, at, dup, rep[dup])  # direct cosine to the kept image
        out = _CopyResult(
            graph["labels"],
            none.leak_labels,
            graph["nearest"],
            graph["nearest_sim"],
            sim,
            [],
            {},
            at.kind,
            {"self": graph["edges"], "self_per_image": round(graph["edges"] / n1, 4)},
        )
        timer.lap("copy_graph")
    if not cfg.relative_on:
        return out
    kept = np.flatnonzero(cc.representatives(out.labels, rank) == np.arange(n1))
    names, y, info = step._benchmarks(at.mean, at.dims)
    out.leak_labels, leak_edges = dedup_passes.leak_labels(helpers, at, kept, y, r.k, r.threshold)
    out.bench_names, out.bench_info, out.kind = names, info, at.kind
    out.edges.update(relative=leak_edges, relative_per_image=round(leak_edges / max(1, len(kept)), 4))
    timer.lap("relative_graph")
    return out


def benchmark_thumbs(step: Any) -> tuple[list[str], np.ndarray, dict]:
    """Names and hash thumbnails ``(m, s, s)`` of the benchmark images (relative dedup by hash)."""
    from curation.models.sscd import describe
    from curation.sources import iter_images
    from curation.stages.dedup.descriptors import load_descriptor_model

    _, spec, _ = load_descriptor_model(step.cfg, step.ctx.seed)
    s = step.cfg.hashing.thumb_size
    names: list[str] = []
    parts, info = [np.zeros((0, s, s), np.uint8)], {}
    for bench in step.cfg.relative.benchmarks:
        stream, before = iter_images(bench), len(names)
        failed = 0
        while chunk := list(itertools.islice(stream, 256)):
            thumbs, _, _, _, reasons, _ = describe([d for _, d, _ in chunk], None, spec)
            names += [f"{bench.name}:{k}" for (k, _, _), why in zip(chunk, reasons, strict=True) if why is None]
            parts.append(thumbs)
            failed += len(chunk) - len(thumbs)
        info[bench.name] = {"images": len(names) - before, "failed": failed}
    return names, np.concatenate(parts), info
