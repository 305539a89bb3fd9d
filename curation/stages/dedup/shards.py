"""The dedup graph's helpers: each holds a contiguous range of feature partitions, never the pool.

The graph step starts ``dedup.graph.workers`` helpers (:class:`DedupShard`,
Ray actors or in-process objects) and drives them in passes; helpers talk
through ``.npy`` files in a work directory shared by the run (one file per
partition or per helper), so no pool-sized array travels or is held:

1. ``codes``: hash codes of the helper's images (and of their geometric
   variants) from the thumbnails: ``codes-part-P.npy`` ``(m, bits / 8)``,
   ``vcodes-part-P.npy`` ``(m, V, bits / 8)``, ``rows-part-P.npy``, the
   images' rows in the features side files (so any helper reads any image),
   and ``areas-part-P.npy``, their ``width * height``.
2. ``pairs``: one index over the helper's codes; its own codes, the codes of
   its partner ranges (:func:`~curation.algorithms.code_pairs.partner_ranges`:
   each pair of ranges is searched once, each helper about half the pool)
   and every partition's variant codes are searched in it
   (:func:`curation.algorithms.code_pairs.range_pairs`, exact); with
   ``hashing.min_correlation`` each candidate is checked pixel by pixel
   (:class:`~curation.stages.dedup.hash.Check`, thumbnails read back for the
   candidates only): ``pairs-SSSSS.npy`` ``(e, 2)`` global pool ids.
3. ``descriptor_sum`` / ``units``: the pool mean, then the unit descriptors
   of the hash survivors: ``units-part-P.npy`` ``(m1, d) float16``.
4. ``knn``: the exact k-NN of its survivors against every partition's
   units, streamed (:mod:`curation.algorithms.knn_blocks`): edges above the
   threshold and each survivor's nearest other, ``knn-SSSSS.npz``.
5. ``leak``: the same over the images self-dedup keeps (``kept-part-P.npy``
   masks) with the benchmark descriptors (``benchmarks.npy``, read whole by
   every helper): pool-pool and pool -> benchmark edges, and each benchmark's
   local top ``k`` above the threshold, ``leak-SSSSS.npz``.
6. ``decide``: the decisions files of its partitions, from the images the
   graph process decided (``decided-*.npy``; every other image is kept),
   with the distances and similarities computed from the files here.

Memory of a helper holding ``n_s`` of the ``N`` images (``N / S`` with ``S``
helpers), in bytes: pass 2: ``~270 n_s`` (its codes and multi-index hashing
tables, measured) plus one streamed partition's variant codes
(``V B N / P``, ``B`` code bytes); passes 4-5: ``(4 d + 12 k) b`` for a query
block of ``b = min(n_s, graph.workers.query_block)`` (float32 queries and
their heap; each block streams every partition again) + ``4 d N / P`` (one
streamed partition) + the kept edges; pass 6: its partitions' decision
columns (~100 bytes per image), the k-NN file of its survivors and the keys
it names. At ``N = 1.2e9``, ``S = 160`` helpers (one per GPU), ``P = 1200``,
``d = 512``, ``k = 64``: about 21 GB per helper in pass 4 (one block of 7.5M
queries), about 2 GB in pass 2. A helper granted a GPU searches on it
(:class:`~curation.algorithms.knn_blocks.Device`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import numpy as np

from curation.stages.base import Grant, StageContext
from curation.stages.dedup.streams import Blocks, Chunks, Rows, Variants, file_name

STEP = "features"


class DedupShard:
    """One helper: the alive images of ``partitions`` (a contiguous range of the pool).

    ``offsets``: global pool id of the first image of every partition of the
    pool (``{partition: start}``, all partitions); ``work``: the shared work
    directory. Survivor-space passes use the same layout over survivors.
    """

    def __init__(self, ctx: StageContext, partitions: list[int], work: str, grant: Grant | None = None):
        from curation.stages.dedup.pool import Pool

        self.ctx = ctx
        self.cfg = self.ctx.stage_config
        self.partitions, self.work = list(partitions), Path(work)
        self.pool = Pool(self.ctx.step_dir(STEP), self.partitions)
        self.grant = grant or Grant()
        self._threads()
        self.device = _device(self.grant)

    def _threads(self) -> None:
        import faiss

        faiss.omp_set_num_threads(max(1, int(self.grant.num_cpus)))

    def sizes(self) -> list[int]:
        """Alive images of each own partition."""
        return [b - a for _, a, b in self.pool.ranges()]

    def _coder(self):
        from curation.algorithms import pca_hash, phash

        if self.cfg.hashing.method == "phash":
            return phash.phash_codes
        basis = pca_hash.PCABasis.load(self.work.parent)
        return lambda t: pca_hash.hash_codes(pca_hash.features(t), basis)

    def codes(self) -> int:
        """Pass 1: codes and variant codes of every own partition; returns images coded."""
        from curation.stages.dedup.hash import THUMBS, _variant_codes

        code, h = self._coder(), self.cfg.hashing
        for p, a, b in self.pool.ranges():
            one = _PartPool(self.pool, p, a, b)
            thumbs = list(one.arrays(THUMBS))
            codes = code(thumbs[0]) if thumbs else np.zeros((0, h.bits // 8), np.uint8)
            np.save(self.work / file_name("codes", p), codes.astype(np.uint8))
            np.save(self.work / file_name("rows", p), self.pool.feature_row[a:b].astype(np.int64))
            np.save(self.work / file_name("areas", p), self.pool.area[a:b])  # the keep policy's, for touched images
            if h.variants.enabled:
                parts = [c for _, c, _ in _variant_codes(one, h, code)]
                v = np.concatenate(parts) if parts else np.zeros((0, h.variants.spec().count, h.bits // 8), np.uint8)
                np.save(self.work / file_name("vcodes", p), v)
        return len(self.pool)

    def pairs(self, index: int, offsets: dict[int, int], ranges: list[list[int]]) -> dict[str, int]:
        """Pass 2: near pairs found by this helper's range (see the module doc): ``pairs-SSSSS.npy``;
        returns the pairs kept and the candidates checked and rejected by the pixel check."""
        from curation.algorithms import code_pairs
        from curation.stages.dedup.hash import Check

        h = self.cfg.hashing
        v = h.variants
        order = sorted(offsets)
        own_parts = [self._load("codes", p) for p in self.partitions]
        own = np.concatenate(own_parts) if own_parts else np.zeros((0, h.bits // 8), np.uint8)
        partners = [q for j in code_pairs.partner_ranges(index, len(ranges)) for q in ranges[j]]
        later = Blocks(self.work, "codes", sorted(partners), offsets)
        variants = Variants(self.work, order, offsets) if v.enabled else ()
        start = offsets[self.partitions[0]] if self.partitions else 0
        pool = _WorkPool(self.ctx.step_dir(STEP), self.work, offsets)
        check = Check(pool, h)
        found = [np.zeros((0, 2), np.int64)]
        for a, b, rows in code_pairs.range_pairs(
            own, start, later, h.max_distance, variants, v.max_distance, h.search, h.flat_max
        ):
            if rows is None:
                keep: np.ndarray | None = check(a, None, b)
            else:
                which = rows % v.spec().count
                keep = check(_variant_thumbs(pool, h, a, which), which, b) if check.tau is not None else None
            if keep is not None:
                a, b = a[keep], b[keep]
            found.append(np.stack([a, b], axis=1))
        pairs = np.concatenate(found)
        np.save(self.work / f"pairs-{index:05d}.npy", pairs)
        return {"pairs": len(pairs), "candidate_pairs": check.candidates, "rejected_pairs": check.rejected}

    def hash_leaks(self, bench: np.ndarray, offsets: dict[int, int]) -> np.ndarray:
        """``(e, 2)`` (global pool id, benchmark index) of own codes and variant codes near a benchmark code."""
        from curation.algorithms import hamming

        h = self.cfg.hashing
        v = h.variants
        index = hamming.build_index(
            bench, max(h.max_distance, v.max_distance if v.enabled else 0), h.search, h.flat_max
        )
        found = [np.zeros((0, 2), np.int64)]
        for p in self.partitions:
            codes = self._load("codes", p)
            ids = offsets[p] + np.arange(len(codes))
            queries = [(codes, ids, h.max_distance)]
            if v.enabled:
                variants = self._load("vcodes", p)
                queries.append(
                    (variants.reshape(-1, variants.shape[-1]), np.repeat(ids, variants.shape[1]), v.max_distance)
                )
            for q, owners, radius in queries:
                i, j, _ = hamming.range_pairs(index, q, owners, radius)
                found.append(np.stack([i, j], axis=1))
        return np.concatenate(found)

    def _load(self, kind: str, p: int) -> np.ndarray:
        return np.load(self.work / file_name(kind, p), allow_pickle=False)

    def _survivors(self, duplicates: list[np.ndarray]):
        """``(partition, a, b, local ids of its survivors)``: every image but the hash ``duplicates``."""
        for (p, a, b), dup in zip(self.pool.ranges(), duplicates, strict=True):
            yield p, a, b, np.setdiff1d(np.arange(b - a), dup)

    def descriptor_sum(self, duplicates: list[np.ndarray]) -> tuple[np.ndarray | None, int]:
        """Pass 3a: float64 sum of the raw descriptors of own survivors (hash duplicates: local ids per partition)."""
        from curation.stages.dedup.descriptors import DESCRIPTORS

        total, count = None, 0
        for p, a, b, local in self._survivors(duplicates):
            for chunk in _PartPool(self.pool, p, a, b).arrays(DESCRIPTORS, np.asarray(local) + a):
                s = chunk.astype(np.float64).sum(axis=0)
                total = s if total is None else total + s
                count += len(chunk)
        return total, count

    def units(self, duplicates: list[np.ndarray], mean: np.ndarray | None) -> tuple[list[int], int]:
        """Pass 3b: ``units-part-P.npy``, unit descriptors of own survivors; returns their counts and the dimension."""
        from curation.algorithms.knn import unit_rows
        from curation.stages.dedup.descriptors import DESCRIPTORS

        counts, dims = [], self._dims()
        for p, a, b, local in self._survivors(duplicates):
            parts = list(_PartPool(self.pool, p, a, b).arrays(DESCRIPTORS, np.asarray(local) + a))
            x = unit_rows(np.concatenate(parts), mean) if parts else np.zeros((0, dims), np.float32)
            np.save(self.work / file_name("units", p), x.astype(np.float16))
            counts.append(len(x))
        return counts, dims

    def _dims(self) -> int:
        from curation.stages.dedup.descriptors import DESCRIPTORS

        if not self.partitions:
            return 0
        return int(np.load(self.pool._file(self.partitions[0], DESCRIPTORS), mmap_mode="r").shape[1])

    def rows(self, ids: np.ndarray, offsets: dict[int, int]) -> np.ndarray:
        """Unit descriptors ``(len(ids), d)`` float32 of own survivors ``ids`` (sorted survivor ids)."""
        out = [np.zeros((0, self._dims()), np.float32)]
        for p in self.partitions:
            x = self._load("units", p)
            at = ids[(ids >= offsets[p]) & (ids < offsets[p] + len(x))] - offsets[p]
            out.append(x[at].astype(np.float32))
        return np.concatenate(out)

    def hold_sample(self, ids: np.ndarray, offsets: dict[int, int]) -> int:
        """Pass 3c: keep own sampled survivors ``ids`` for the quantizer's k-means; returns how many."""
        self.sample: np.ndarray | None = self.rows(ids, offsets)
        return len(self.sample)

    def sample_rows(self, local: np.ndarray) -> np.ndarray:
        assert self.sample is not None  # hold_sample came first
        return self.sample[local]

    def sample_stats(self):
        """One k-means step on own sampled rows, against the centroids the graph step wrote."""
        from curation.algorithms.kmeans_sharded import partial_stats

        centroids = np.load(self.work / "coarse-centroids.npy")
        assert self.sample is not None  # hold_sample came first
        return partial_stats(self.sample, centroids, spherical=True, gpu=self.device.gpu)

    def assign(self, nprobe: int) -> None:
        """Pass 3d: the shared inverted lists; ``lists-part-P.npy``, each own unit's list."""
        from curation.algorithms.knn_blocks import Coarse

        self.sample = None
        self.coarse = Coarse(np.load(self.work / "centroids.npy"), nprobe, self.device)
        for p in self.partitions:
            np.save(self.work / file_name("lists", p), self.coarse.lists(self._load("units", p)))

    def _blocks(self, partitions: list[int], offsets: dict[int, int] | None, kept: bool) -> Blocks:
        lists = "lists" if getattr(self, "coarse", None) is not None else None
        return Blocks(self.work, "units", partitions, offsets, "kept" if kept else None, lists)

    def _own_units(self, kept: bool) -> Rows:
        return Rows(self.work, self.partitions, "kept" if kept else None, self._dims())

    def _search(
        self, queries: Rows, start: int, offsets: dict[int, int], kept: bool, total: int, k: int, threshold: float
    ) -> dict[str, np.ndarray]:
        from curation.algorithms import knn_blocks

        every = self._blocks(sorted(offsets), offsets, kept)
        # query_block bounds what is held (queries as float32 and their heap); each block streams the pool again.
        return knn_blocks.self_graph(
            queries,
            start,
            every,
            k,
            total,
            threshold,
            chunk=self.cfg.graph.workers.query_block,
            coarse=getattr(self, "coarse", None),
            device=self.device,
        )

    def knn(self, index: int, offsets: dict[int, int], total: int, k: int, threshold: float) -> dict[str, int]:
        """Pass 4: self k-NN edges of own survivors above ``threshold`` (survivor ids); ``knn-SSSSS.npz``."""
        queries = self._own_units(kept=False)
        start = offsets[self.partitions[0]] if self.partitions else 0
        out = self._search(queries, start, offsets, False, total, k, threshold)
        np.savez(self.work / f"knn-{index:05d}.npz", **cast(dict[str, Any], out))  # numpy's stub: allow_pickle
        return {"queries": len(queries), "edges": len(out["u"])}

    def leak(self, index: int, kept_offsets: dict[int, int], total: int, k: int, threshold: float) -> dict[str, int]:
        """Pass 5: relative-dedup edges of own kept images (kept ids) and benchmarks; ``leak-SSSSS.npz``."""
        from curation.algorithms import knn_blocks

        queries = self._own_units(kept=True)
        start = kept_offsets[self.partitions[0]] if self.partitions else 0
        pool = self._search(queries, start, kept_offsets, True, total, k, threshold)
        bench = np.load(self.work / "benchmarks.npy")
        # Benchmarks are few: searched exactly, both ways, against this helper's kept images (a query block
        # at a time, as above).
        step = self.cfg.graph.workers.query_block
        chunks = Chunks(queries, start, step)
        found = [knn_blocks.block_topk(q, [(0, bench)], k, len(bench), device=self.device) for _, q in chunks]
        ps = np.concatenate([f[0] for f in found]) if found else np.zeros((0, min(k, len(bench))), np.float32)
        pi = np.concatenate([f[1] for f in found]) if found else np.zeros((0, min(k, len(bench))), np.int64)
        pu, pv, _ = knn_blocks.threshold_edges(start, ps, pi, threshold)
        bs, bi = knn_blocks.block_topk(bench, chunks, k, len(queries), device=self.device)
        keep = (bi >= 0) & (bs > threshold)
        rows = np.broadcast_to(np.arange(len(bi))[:, None], bi.shape)
        np.savez(
            self.work / f"leak-{index:05d}.npz",
            u=pool["u"],
            v=pool["v"],
            pool=pu,
            bench=pv,
            bench_q=rows[keep],
            bench_pool=bi[keep],
            bench_sim=bs[keep],
        )
        return {"queries": len(queries), "edges": len(pool["u"]) + len(pu) + int(keep.sum())}

    def decide(self, index: int, offsets: dict[int, int], units: dict[int, int] | None, names: list[str]) -> list[int]:
        """Pass 6: the decisions files of own partitions from the graph process's decided images
        (:func:`curation.stages.dedup.decisions.write_range`); returns the status counts."""
        from curation.stages.dedup.decisions import write_range

        return write_range(self, index, offsets, units, names, self.cfg.hashing.method)


def _device(grant: Grant):
    """Where this helper's searches run: its GPU when granted one that Faiss sees, else its CPUs."""
    import logging

    from curation.algorithms.knn_blocks import Device, on_gpu

    gpu = on_gpu(grant.num_gpus)
    if grant.num_gpus and not gpu:  # granted by Ray, but this Faiss cannot use it: say so, run anyway
        logging.getLogger("curation").warning("dedup helper: granted a GPU that faiss does not see; searching on CPUs")
    return Device(gpu)


class _PartPool:
    """One partition of a helper's pool, read through the same ``arrays`` interface (global rows ``a:b``)."""

    def __init__(self, pool: Any, p: int, a: int, b: int):
        self.pool, self.p, self.a, self.b = pool, p, a, b

    def arrays(self, suffix: str, nodes: np.ndarray | None = None):
        ids = np.arange(self.a, self.b) if nodes is None else np.asarray(nodes, np.int64)
        if len(ids):
            rows = self.pool.feature_row[ids]
            yield np.load(self.pool._file(self.p, suffix), mmap_mode="r", allow_pickle=False)[rows]


class _WorkPool:
    """Side-file rows of any pool image by global id, through the ``rows-part-P.npy`` work files (one
    partition's rows at a time): the ``gather`` of the graph step's pool, without holding the pool."""

    def __init__(self, step_dir: Path, work: Path, offsets: dict[int, int]):
        self.step_dir, self.work = step_dir, work
        self.parts = sorted(offsets)
        self.starts = np.array([offsets[p] for p in self.parts], np.int64)

    def gather(self, suffix: str, ids: np.ndarray) -> np.ndarray:
        """Rows of sorted global ``ids``, in order."""
        from curation.layout import partition_path

        ids = np.asarray(ids, np.int64)
        where = np.searchsorted(self.starts, ids, side="right") - 1
        out = []
        for j in np.unique(where):
            p = self.parts[j]
            rows = np.load(self.work / file_name("rows", p), allow_pickle=False)[ids[where == j] - self.starts[j]]
            out.append(np.load(partition_path(self.step_dir, p, suffix), mmap_mode="r", allow_pickle=False)[rows])
        return np.concatenate(out)


def _variant_thumbs(pool: _WorkPool, cfg: Any, owners: np.ndarray, which: np.ndarray) -> np.ndarray:
    """Thumbnails ``(k, s, s)`` of variant ``which[i]`` of image ``owners[i]``, cut again from the sources."""
    from curation.algorithms.variants import variant_thumbnails
    from curation.stages.dedup.hash import SOURCES

    uniq, inverse = np.unique(owners, return_inverse=True)
    thumbs = variant_thumbnails(pool.gather(SOURCES, uniq), cfg.variants.spec(), cfg.thumb_size)
    return thumbs[inverse, which]
