"""The dedup graph step's passes over its helpers (:mod:`curation.stages.dedup.shards`).

The graph process holds arrays of the images some pair or edge touches only
(:mod:`curation.algorithms.sparse_graph`), never a per-image array of the
pool, descriptors or an index; the helpers hold their range of partitions.
Every pass gives the same pairs, edges and components as one process over
the whole pool (exact searches, block by block; union-find labels do not
depend on the order of the edges).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from curation.stages.dedup.streams import file_name

WORK = "work"


@dataclass
class Helpers:
    """The started helpers: ``ranges[i]`` are helper ``i``'s partitions; ``offsets`` global starts."""

    group: Any
    ranges: list[list[int]]
    offsets: dict[int, int]
    work: Path

    def call(self, method: str, args: list[tuple] | None = None) -> list[Any]:
        return self.group.call(method, args if args is not None else [()] * len(self.ranges))

    def per_partition(self, ids: np.ndarray) -> list[list[np.ndarray]]:
        """Sorted global ``ids`` as local ids per partition, grouped by helper."""
        parts = sorted(self.offsets)
        starts = np.array([self.offsets[p] for p in parts] + [np.iinfo(np.int64).max])
        cut = np.searchsorted(ids, starts)
        local = {p: ids[cut[j] : cut[j + 1]] - starts[j] for j, p in enumerate(parts)}
        return [[local[p] for p in r] for r in self.ranges]


def start(step: Any, pool: Any, out_dir: Path, resources: Any) -> Helpers:
    """Start the helpers (``GraphWorkers.helpers``: ``count``, else one per GPU or per worker node) over
    contiguous partition ranges."""
    from curation.algorithms.sharded_index import shard_ranges
    from curation.stages.dedup.shards import DedupShard

    work = out_dir / WORK
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    sizes = [b - a for _, a, b in pool.ranges()]
    count = step.cfg.graph.workers.helpers(step.workers.nodes, step.workers.gpus)
    ranges = [pool.parts[lo:hi] for lo, hi in shard_ranges(sizes, count)] or [[]]
    args = [(step.ctx, r, str(work)) for r in ranges]
    group = step.workers.start(DedupShard, args, resources, "DedupShard")
    offsets = {p: a for p, a, _ in pool.ranges()}
    return Helpers(group, ranges, offsets, work)


def finish(helpers: Helpers) -> list[dict[str, Any]]:
    """Per helper ``placement`` and ``peak_rss_bytes``; stops them and removes the work files."""
    try:
        return helpers.group.info()
    finally:
        helpers.group.stop()
        shutil.rmtree(helpers.work, ignore_errors=True)


def hash_graph(helpers: Helpers) -> tuple[Any, dict[str, int]]:
    """Passes 1-2: the hash groups over the images some pair touches (:class:`~curation.algorithms.sparse_graph.Sparse`,
    global ids) from the pair files, and the pair counts."""
    from curation.algorithms import sparse_graph

    helpers.call("codes")
    found = helpers.call("pairs", [(i, helpers.offsets, helpers.ranges) for i in range(len(helpers.ranges))])

    def edges():
        for i in range(len(helpers.ranges)):
            pairs = np.load(helpers.work / f"pairs-{i:05d}.npy")
            yield pairs[:, 0], pairs[:, 1]

    groups = sparse_graph.touched_components(edges)
    return groups, {key: int(sum(f[key] for f in found)) for key in ("pairs", "candidate_pairs", "rejected_pairs")}


@dataclass
class Units:
    """Where the survivors' unit descriptors are: survivor-id start per partition, the mean, the total,
    the dimension and the search (``flat``, or ``ivf`` over lists shared by the helpers)."""

    offsets: dict[int, int]
    mean: np.ndarray | None
    total: int
    dims: int
    kind: str


# Coarse k-means points per inverted list (Faiss warns below 39).
TRAIN_PER_LIST = 64


def units(helpers: Helpers, hash_duplicates: np.ndarray, n1: int, center: bool, index: Any, seed: int) -> Units:
    """Pass 3: the mean of the ``n1`` survivors (every image but the sorted ``hash_duplicates``; when
    centring), their unit descriptors in ``units-part-P.npy`` and, above ``index.exact_max`` survivors (or
    with an ivf ``index.kind``), the shared inverted lists."""
    from curation.algorithms.index import default_nlist, resolve_kind

    local = helpers.per_partition(hash_duplicates)  # each helper takes the complement in its partitions
    mean = None
    if center and n1:
        sums = helpers.call("descriptor_sum", [(s,) for s in local])
        total = sum(s for s, c in sums if c)
        mean = (total / n1).astype(np.float32)
    written = helpers.call("units", [(s, mean) for s in local])
    counts = [c for per, _ in written for c in per]
    parts = [p for r in helpers.ranges for p in r]
    starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    at = Units({p: int(starts[j]) for j, p in enumerate(parts)}, mean, n1, written[0][1], "flat")
    if resolve_kind(at.total, index) != "flat":
        nlist = index.nlist or default_nlist(at.total)
        rng = np.random.default_rng(seed)
        sample = np.sort(rng.choice(at.total, size=min(at.total, TRAIN_PER_LIST * nlist), replace=False))
        nlist = min(nlist, len(sample))
        centroids = _train_coarse(helpers, at, sample, nlist, seed)
        np.save(helpers.work / "centroids.npy", centroids)
        helpers.call("assign", [(index.nprobe,)] * len(helpers.ranges))
        at.kind = f"ivf{nlist},nprobe{min(index.nprobe, nlist)},exact"
    return at


def _train_coarse(helpers: Helpers, at: Units, sample: np.ndarray, nlist: int, seed: int) -> np.ndarray:
    """The shared quantizer: Faiss' spherical k-means (20 iterations) of the sampled survivors, each helper
    holding its own sampled rows and assigning them on its devices (its GPU when granted one)."""
    from curation.algorithms.kmeans_sharded import train_sharded

    sizes = helpers.call("hold_sample", [(s, at.offsets) for s in _per_range(helpers, at, sample)])
    return train_sharded(_Sample(helpers, sizes), nlist, n_iter=20, spherical=True, seed=seed).centroids


class _Sample:
    """The training sample as :func:`~curation.algorithms.kmeans_sharded.train_sharded` shards: the helpers."""

    def __init__(self, helpers: Helpers, sizes: list[int]):
        self.helpers, self._sizes = helpers, sizes
        self.starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)

    def sizes(self) -> list[int]:
        return self._sizes

    def stats(self, centroids: np.ndarray):
        # One file every helper reads (not a copy per call); the sums come back one helper at a time.
        np.save(self.helpers.work / "coarse-centroids.npy", centroids)
        return self.helpers.group.imap("sample_stats", [()] * len(self._sizes))

    def take(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, np.int64)
        owner = np.searchsorted(self.starts, rows, side="right") - 1
        parts = self.helpers.call(
            "sample_rows", [(rows[owner == i] - self.starts[i],) for i in range(len(self._sizes))]
        )
        out = np.zeros((len(rows), parts[0].shape[1]), np.float32)
        for i, part in enumerate(parts):
            out[owner == i] = part
        return out


def _per_range(helpers: Helpers, at: Units, ids: np.ndarray) -> list[np.ndarray]:
    """Sorted survivor ``ids`` split by helper (still survivor ids)."""
    firsts = [at.offsets[r[0]] if r else at.total for r in helpers.ranges] + [at.total]
    cut = np.searchsorted(ids, firsts)
    return [ids[cut[i] : cut[i + 1]] for i in range(len(helpers.ranges))]


def self_edges(helpers: Helpers, at: Units, k: int, threshold: float, shift: np.ndarray) -> tuple[Any, int]:
    """Pass 4: copy components over the survivors some edge touches (global ids; ``shift``: the hash
    duplicates' :func:`~curation.algorithms.sparse_graph.shift_of`) and the edge count. Each survivor's
    nearest other stays in the helper's ``knn-SSSSS.npz``, read back when it writes its decisions."""
    from curation.algorithms import sparse_graph

    stats = helpers.call("knn", [(i, at.offsets, at.total, k, threshold) for i in range(len(helpers.ranges))])

    def edges():
        for i in range(len(helpers.ranges)):
            with np.load(helpers.work / f"knn-{i:05d}.npz") as f:
                yield sparse_graph.expand(f["u"], shift), sparse_graph.expand(f["v"], shift)

    return sparse_graph.touched_components(edges), int(sum(s["edges"] for s in stats))


def _cat(parts: list[np.ndarray], dtype) -> np.ndarray:
    return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)


def _kept_masks(helpers: Helpers, at: Units, copies: np.ndarray) -> tuple[dict[int, int], int]:
    """``kept-part-P.npy``: which of each partition's survivors self-dedup keeps (all but the sorted survivor
    ids ``copies``), one partition at a time; returns the kept-id start per partition and the total."""
    kept_offsets, before = {}, 0
    parts = [p for r in helpers.ranges for p in r]
    starts = [at.offsets[p] for p in parts] + [at.total]
    for j, p in enumerate(parts):
        mask = np.ones(starts[j + 1] - starts[j], bool)
        lo, hi = np.searchsorted(copies, starts[j : j + 2])
        mask[copies[lo:hi] - starts[j]] = False
        np.save(helpers.work / file_name("kept", p), mask)
        kept_offsets[p] = before
        before += int(mask.sum())
    return kept_offsets, before


def leak_graph(
    helpers: Helpers, at: Units, copies: np.ndarray, bench: np.ndarray, k: int, threshold: float, ids: Any, n: int
) -> tuple[Any, int]:
    """Pass 5: leak components (global ids; benchmark ``j`` is node ``n + j``) over the survivors that
    self-dedup keeps (every one but the sorted survivor ids ``copies``) and the benchmarks. ``ids(kept ids)``
    maps the helpers' kept ids to global ids."""
    from curation.algorithms import knn_blocks, sparse_graph

    kept_offsets, total = _kept_masks(helpers, at, copies)
    np.save(helpers.work / "benchmarks.npy", np.ascontiguousarray(bench, np.float32))
    stats = helpers.call("leak", [(i, kept_offsets, total, k, threshold) for i in range(len(helpers.ranges))])
    first_bench, queries, pool_ids, sims = n, [], [], []
    for i in range(len(helpers.ranges)):
        with np.load(helpers.work / f"leak-{i:05d}.npz") as f:
            queries.append(f["bench_q"])
            pool_ids.append(f["bench_pool"])
            sims.append(f["bench_sim"])
    q, v = knn_blocks.merge_candidates(_cat(queries, np.int64), _cat(pool_ids, np.int64), _cat(sims, np.float32), k)

    def edges():
        for i in range(len(helpers.ranges)):
            with np.load(helpers.work / f"leak-{i:05d}.npz") as f:
                yield ids(f["u"]), ids(f["v"])
                yield ids(f["pool"]), first_bench + f["bench"]
        yield first_bench + q, ids(v)

    return sparse_graph.touched_components(edges), int(sum(s["edges"] for s in stats))
