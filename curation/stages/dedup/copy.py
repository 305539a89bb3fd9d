"""The copy-detection pass of the dedup graph step: self-dedup, then relative dedup on what it keeps.

Runs only with a descriptor (``DedupConfig.describes``). Self-dedup links the
hash survivors' descriptors above ``copy_dedup.threshold`` in a k-NN graph;
relative dedup then searches the images self-dedup keeps (not the ones it is
about to drop, as in the paper) against the benchmark images at
``relative.threshold``. Without a descriptor, benchmarks are matched by hash
(``dedup_hash.leak_hits``).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class _CopyResult:
    """Copy components and benchmark hits over the survivors some edge touches (global ids)."""

    graph: Any  # sparse_graph.Sparse: copy components
    rep: np.ndarray  # (t,) kept image of each touched survivor's component
    leak_nodes: np.ndarray  # kept images whose leak component holds a benchmark, sorted
    leak_hit: np.ndarray  # the smallest such benchmark of each
    bench_names: list[str] = field(default_factory=list)
    bench_info: dict = field(default_factory=dict)
    kind: str = "none"
    edges: dict = field(default_factory=dict)  # edges kept per graph, and per survivor
    unit_offsets: dict | None = None  # survivor-id start per partition of the units files

    @property
    def nbytes(self) -> int:
        return self.graph.nbytes + self.rep.nbytes + self.leak_nodes.nbytes + self.leak_hit.nbytes


def copy_pass(step: Any, n: int, helpers: Any, hash_duplicates: np.ndarray, rank_of: Any, timer: Any) -> _CopyResult:
    """Self-dedup over the hash survivors (every image of the ``n`` but the sorted ``hash_duplicates``), then
    relative dedup over what self-dedup keeps (as in the paper). ``rank_of(global ids)``: the keep policy.

    The k-NN searches run in the graph step's helpers, each over its range
    of partitions against every partition's descriptors, streamed
    (:mod:`curation.stages.dedup.passes`); here only the touched survivors'
    edges are unioned. Helpers speak survivor ids (and kept ids); they are
    mapped to global ids by the sorted removed ids (``sparse_graph.expand``).
    """
    from curation.algorithms import sparse_graph as sg
    from curation.stages.dedup import passes as dedup_passes

    cfg, n1, empty = step.cfg, n - len(hash_duplicates), np.zeros(0, np.int64)
    out = _CopyResult(sg.Sparse(empty, empty), empty, empty, empty)
    if not cfg.describes or not n1:
        return out
    c, r, shift = cfg.copy_dedup, cfg.relative, sg.shift_of(hash_duplicates)
    at = dedup_passes.units(helpers, hash_duplicates, n1, cfg.descriptor.center, c.index, step.ctx.seed)
    out.unit_offsets = at.offsets
    timer.lap("descriptors")
    if cfg.copy_on:
        out.graph, edges = dedup_passes.self_edges(helpers, at, c.k, c.threshold, shift)
        out.rep, out.kind = sg.representatives(out.graph, rank_of(out.graph.nodes)), at.kind
        out.edges = {"self": edges, "self_per_image": round(edges / n1, 4)}
        timer.lap("copy_graph")
    if not cfg.relative_on:
        return out
    copies = sg.compact(out.graph.nodes[out.rep != out.graph.nodes], hash_duplicates)  # survivor ids
    names, y, info = step._benchmarks(at.mean, at.dims)
    kept_shift = sg.shift_of(copies)
    leak, leak_edges = dedup_passes.leak_graph(
        helpers, at, copies, y, r.k, r.threshold, lambda kept: sg.expand(sg.expand(kept, kept_shift), shift), n
    )
    out.leak_nodes, out.leak_hit = sg.benchmark_hits(leak, n)
    out.bench_names, out.bench_info, out.kind = names, info, at.kind
    out.edges.update(relative=leak_edges, relative_per_image=round(leak_edges / max(1, n1 - len(copies)), 4))
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
