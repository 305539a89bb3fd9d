"""The dedup stage: PCA-hash and copy-detection (SSCD) deduplication, as in LVD-142M.

Steps (see ``docs/dedup.md``):

- ``features`` (map): each image is decoded once into a grayscale thumbnail
  (hash input) and an SSCD descriptor; side files ``features.files/part-NNNNNN.thumbs.npy``
  ``(m, s, s) uint8`` and ``features.files/part-NNNNNN.desc.npy`` ``(m, d)``; row ``j`` belongs
  to the table row whose ``feature_row`` is ``j``.
- ``graph`` (global, the whole pool at once, never per worker): PCA hash
  fitted on a sample, Hamming groups, a k-NN graph over the hash survivors,
  connected components, components that reach a benchmark image. Writes
  ``decisions-part-NNNNNN.parquet`` (keyed by sample key) and ``funnel.json``.
- ``table`` (map): joins the decisions onto each partition: the stage table.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation import tables
from curation.atomic import write_json
from curation.algorithms.knn import unit_rows
from curation.errors import ConfigError, PartitionError
from curation.stages.dedup_config import DedupConfig
from curation.stages.base import GlobalStep, MapStep, PartitionOutput, Resources, Stage, partition_path
from curation.stages.registry import register

log = logging.getLogger("curation")
STAGE = "dedup"
THUMBS, DESCRIPTORS = "thumbs.npy", "desc.npy"
FUNNEL_FILE = "funnel.json"
_FEATURE_COLUMNS = pa.schema([("key", pa.string()), ("width", pa.int64()), ("height", pa.int64()),
                              ("feature_row", pa.int64())])
# Status of each decision code of ``components.decide``, in funnel order.
STATUSES = (tables.SUCCESS, "duplicate_pca", "duplicate_copy", "benchmark_leak")


def _gpu_workers(device: str) -> bool:
    """Whether descriptor workers get a GPU: ``auto`` asks the Ray cluster (or this machine)."""
    if device != "auto":
        return device == "cuda"
    import ray

    if ray.is_initialized():
        return ray.cluster_resources().get("GPU", 0) > 0
    import torch

    return torch.cuda.is_available()


def load_descriptor_model(cfg: DedupConfig, seed: int):
    """``(embedder, preprocess spec, weights source)`` of the configured descriptor."""
    from curation.models import sscd

    d = cfg.descriptor
    model, source = sscd.load(d.weights, d.backbone, d.dims, d.gem_p, seed=seed)
    spec = sscd.Preprocess(d.resize, d.image_size, cfg.hashing.thumb_size, cfg.hashing.method == "phash")
    return sscd.Embedder(model, d.device, d.batch_size, d.dims), spec, source


class Features(MapStep):
    """Thumbnails and SSCD descriptors of each alive image (side files)."""

    name = "features"

    def resources(self) -> Resources:
        d = self.cfg.descriptor
        return Resources(num_cpus=d.num_cpus, num_gpus=1 if _gpu_workers(d.device) else 0)

    def batch_size(self) -> int:
        return max(256, self.cfg.descriptor.batch_size)

    def setup(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.embed, self.spec, self.source = load_descriptor_model(self.cfg, self.ctx.seed)
        threads = self.cfg.descriptor.num_cpus
        self.pool = ThreadPoolExecutor(threads) if threads > 1 else None

    def open(self, partition: int, out: PartitionOutput) -> None:
        from curation.imagestore import pool_images

        self.images, self.out = pool_images(self.ctx.run_dir, partition), out
        self.thumbs: list[np.ndarray] = []
        self.descs: list[np.ndarray] = []
        self.rows = 0

    def process_batch(self, batch: pa.Table) -> pa.Table:
        from curation.models.sscd import describe

        keys = batch.column("key").to_pylist()
        blobs = [self.images.get(k) if k in self.images else None for k in keys]  # None: missing_image
        thumbs, desc, width, height, reasons, errors = describe(
            blobs, self.embed, self.spec, self.cfg.descriptor.draft, self.pool)
        failed = np.array([r is not None for r in reasons], dtype=bool)
        out = tables.drop(batch.select(tables.STATUS_COLUMNS), failed, STAGE, reasons, errors)
        row = np.full(len(keys), -1, np.int64)
        row[~failed] = self.rows + np.arange(len(desc))
        self.rows += len(desc)
        self.thumbs.append(thumbs)
        self.descs.append(desc.astype(self.cfg.descriptor.storage_dtype))
        wide = np.zeros((2, len(keys)), np.int64)
        wide[:, ~failed] = width, height
        return out.append_column("width", pa.array(wide[0], mask=failed)).append_column(
            "height", pa.array(wide[1], mask=failed)).append_column("feature_row", pa.array(row, mask=failed))

    def close(self) -> dict[str, Any]:
        s, d = self.cfg.hashing.thumb_size, self.cfg.descriptor
        thumbs = np.concatenate(self.thumbs) if self.thumbs else np.zeros((0, s, s), np.uint8)
        descs = np.concatenate(self.descs) if self.descs else np.zeros((0, d.dims), d.storage_dtype)
        for suffix, array in ((THUMBS, thumbs), (DESCRIPTORS, descs)):
            with open(self.out.path(suffix), "wb") as fh:
                np.save(fh, array, allow_pickle=False)
        return {"described": int(len(descs)), "descriptor_weights": self.source}


class Graph(GlobalStep):
    """Hash groups, the copy-detection graph and benchmark leaks over the whole pool."""

    name = "graph"

    def resources(self) -> Resources:
        g = self.cfg.graph
        return Resources(num_cpus=g.num_cpus, num_gpus=g.num_gpus, memory=int(g.memory_gb * 2**30))

    def run(self, out_dir: Path) -> dict[str, Any]:
        import faiss

        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(self.cfg.graph.num_cpus)  # the CPUs this task holds
        try:
            return self._run(out_dir)
        finally:
            faiss.omp_set_num_threads(threads)

    def _run(self, out_dir: Path) -> dict[str, Any]:
        from curation.algorithms import components as cc
        from curation.algorithms import hamming, knn

        timer, h = _Timer(), self.cfg.hashing
        pool = _Pool(self.ctx.step_dir(Features.name))
        codes, hash_info = self._codes(pool, out_dir)
        timer.lap("hash")
        pairs = hamming.near_pairs(codes, h.max_distance, h.search, h.flat_max)
        pca_labels = cc.connected_components(len(pool), ((i, j) for i, j, _ in pairs))
        rank = -pool.area if self.cfg.keep == "largest" else np.zeros(len(pool), np.int64)
        pca_rep = cc.representatives(pca_labels, rank)
        survivors = np.flatnonzero(pca_rep == np.arange(len(pool)))
        timer.lap("hash_groups")
        x, mean = _descriptors(pool, survivors, self.cfg.descriptor.center, out_dir / "pool-descriptors.npy")
        names, y, bench_info = self._benchmarks(mean, x.shape[1])
        timer.lap("descriptors")
        c, r = self.cfg.copy_dedup, self.cfg.relative
        floor = None if c.rerank_margin is None else min(c.threshold, r.threshold) - c.rerank_margin
        graph = knn.copy_graph(x, y, c.index, c.k, c.threshold, r.k, r.threshold, self.ctx.seed, floor)
        timer.lap("copy_graph")
        dec = cc.decide(pca_rep, survivors, graph.labels, graph.leak_labels, rank[survivors])
        nearest = np.full(len(pool), -1, np.int64)
        similarity = np.full(len(pool), np.nan, np.float32)
        found = graph.nearest >= 0
        nearest[survivors[found]] = survivors[graph.nearest[found]]
        similarity[survivors] = graph.nearest_sim
        _write_decisions(out_dir, pool, dec, codes, nearest, similarity, pa.array(names, pa.string()))
        (out_dir / "pool-descriptors.npy").unlink(missing_ok=True)
        funnel = _funnel(pool, dec.status, len(names))
        write_json(out_dir / FUNNEL_FILE, funnel)
        log.info("dedup funnel: %s", funnel)
        timer.lap("write")
        return {"funnel": funnel, "hash": hash_info, "benchmarks": bench_info,
                "index": graph.kind, "seconds": timer.laps}

    def _codes(self, pool: "_Pool", out_dir: Path) -> tuple[np.ndarray, dict[str, Any]]:
        """Hash codes ``(n, bits // 8) uint8`` of every pool image, in pool order."""
        from curation.algorithms import pca_hash, phash

        h = self.cfg.hashing
        info: dict[str, Any] = {"method": h.method}
        if h.method == "phash":
            codes = [phash.phash_codes(t) for t in pool.arrays(THUMBS)]
        else:
            rng = np.random.default_rng(self.ctx.seed)
            sample = np.sort(rng.choice(len(pool), size=min(len(pool), h.fit_samples), replace=False))
            thumbs = pool.gather(THUMBS, sample) if len(sample) else np.zeros((0, h.thumb_size, h.thumb_size))
            basis = pca_hash.fit(pca_hash.features(thumbs), h.bits, h.thumb_size)
            basis.save(out_dir)
            codes = [pca_hash.hash_codes(pca_hash.features(t), basis) for t in pool.arrays(THUMBS)]
            info.update(fit_samples=int(len(sample)), learned_components=basis.learned)
        return (np.concatenate(codes) if codes else np.zeros((0, h.bits // 8), np.uint8)), info

    def _benchmarks(self, mean: np.ndarray | None, dims: int) -> tuple[list[str], np.ndarray, dict]:
        """Names (``dataset:key``) and unit descriptors ``(m, d)`` of the benchmark images."""
        from curation.models.sscd import describe_all
        from curation.sources import iter_images

        if not self.cfg.relative.benchmarks:
            return [], np.zeros((0, dims), np.float32), {}
        embed, spec, _ = load_descriptor_model(self.cfg, self.ctx.seed)
        names, parts, info = [], [], {}
        for bench in self.cfg.relative.benchmarks:
            images = ((key, data) for key, data, _ in iter_images(bench))
            keys, desc, failed = describe_all(images, embed, spec, self.cfg.descriptor.draft)
            names += [f"{bench.name}:{key}" for key in keys]
            parts.append(desc)
            info[bench.name] = {"images": len(keys), "failed": failed}
        return names, unit_rows(np.concatenate(parts), mean), info


class Table(MapStep):
    """The stage table: the features table with the graph's decisions joined on."""

    name = "table"

    def _features(self, partition: int) -> Path:
        return self.ctx.step_dir(Features.name) / f"{tables.partition_name(partition)}.parquet"

    def num_rows(self, partition: int) -> int:
        import pyarrow.parquet as pq

        return pq.ParquetFile(self._features(partition)).metadata.num_rows

    def read(self, partition: int) -> Iterator[pa.Table]:
        yield from tables.iter_batches(self._features(partition), self.batch_size())

    def open(self, partition: int, out: PartitionOutput) -> None:
        path = self.ctx.step_dir(Graph.name) / f"decisions-{tables.partition_name(partition)}.parquet"
        self.decisions = tables.read_parquet(path)
        self.where = f"{STAGE}/{self.name}/{tables.partition_name(partition)}"

    def process_batch(self, batch: pa.Table) -> pa.Table:
        at = pc.index_in(batch.column("key"), value_set=self.decisions.column("key"))
        if at.null_count:
            raise PartitionError(f"{self.where}: {at.null_count} alive rows have no graph decision")
        dec = self.decisions.take(at)
        status = dec.column("status").to_numpy(zero_copy_only=False)
        out = tables.drop(batch.select(tables.STATUS_COLUMNS), status != tables.SUCCESS, STAGE,
                          status, dec.column("reason").to_pylist())
        for name in ("width", "height"):
            out = out.append_column(name, batch.column(name))
        for name in dec.column_names[3:]:
            out = out.append_column(name, dec.column(name))
        return out


class _Timer:
    def __init__(self):
        import time

        self.clock, self.last, self.laps = time.perf_counter, time.perf_counter(), {}

    def lap(self, name: str) -> None:
        now = self.clock()
        self.laps[name] = round(now - self.last, 3)
        self.last = now


class _Pool:
    """The alive images of the features tables, in pool order (partition, then row).

    Per image (node ``i``): ``keys`` (Arrow strings), ``feature_row`` into its
    partition's side files, ``area``. Partition ``parts[j]`` holds nodes
    ``offsets[j]:offsets[j + 1]``. ``inputs``: rows that entered the stage alive.
    """

    def __init__(self, step_dir: Path):
        from curation.stages.base import committed_partitions

        self.step_dir, self.parts = step_dir, committed_partitions(step_dir)
        keys, rows, area, sizes, self.inputs = [], [], [], [0], 0
        for p in self.parts:
            t = tables.read_parquet(self._file(p, "parquet"))
            earlier = pc.fill_null(pc.not_equal(t["dropped_by"], STAGE), False)  # dropped before this stage
            self.inputs += t.num_rows - int(pc.sum(earlier).as_py() or 0)
            t = t.filter(pc.equal(t["status"], tables.SUCCESS))
            if "feature_row" not in t.column_names:  # a partition without any described image
                t = _FEATURE_COLUMNS.empty_table()
            # 64-bit offsets: a billion keys are more than 2 GB of characters.
            keys.append(t["key"].combine_chunks().cast(pa.large_string()))
            rows.append(t["feature_row"].to_numpy())
            area.append(t["width"].to_numpy() * t["height"].to_numpy())
            sizes.append(t.num_rows)
        self.keys = pa.concat_arrays(keys) if keys else pa.array([], pa.large_string())
        self.feature_row = np.concatenate(rows) if rows else np.zeros(0, np.int64)
        self.area = np.concatenate(area).astype(np.int64) if area else np.zeros(0, np.int64)
        self.offsets = np.cumsum(sizes)

    def __len__(self) -> int:
        return len(self.feature_row)

    def _file(self, p: int, suffix: str) -> Path:
        return partition_path(self.step_dir, p, suffix)

    def ranges(self) -> Iterator[tuple[int, int, int]]:
        for j, p in enumerate(self.parts):
            yield p, int(self.offsets[j]), int(self.offsets[j + 1])

    def arrays(self, suffix: str, nodes: np.ndarray | None = None) -> Iterator[np.ndarray]:
        """Side-file rows of every node (or of sorted ``nodes``), partition by partition."""
        for p, a, b in self.ranges():
            lo, hi = (a, b) if nodes is None else np.searchsorted(nodes, [a, b])
            if hi > lo:
                ids = np.arange(lo, hi) if nodes is None else nodes[lo:hi]
                yield np.load(self._file(p, suffix), mmap_mode="r", allow_pickle=False)[self.feature_row[ids]]

    def gather(self, suffix: str, nodes: np.ndarray) -> np.ndarray:
        return np.concatenate(list(self.arrays(suffix, nodes)))


def _descriptors(pool: _Pool, nodes: np.ndarray, center: bool, path: Path):
    """Unit descriptors of ``nodes`` in a memory-mapped ``.npy`` ``(len(nodes), d)`` float16, and the mean."""
    first = np.load(pool._file(pool.parts[0], DESCRIPTORS), mmap_mode="r") if pool.parts else None
    dims = first.shape[1] if first is not None else 0
    mean = None
    if center and len(nodes):
        total = sum(chunk.astype(np.float64).sum(axis=0) for chunk in pool.arrays(DESCRIPTORS, nodes))
        mean = (total / len(nodes)).astype(np.float32)
    x = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(len(nodes), dims))
    start = 0
    for chunk in pool.arrays(DESCRIPTORS, nodes):
        x[start : start + len(chunk)] = unit_rows(chunk, mean)
        start += len(chunk)
    x.flush()
    return x, mean


def _write_decisions(out_dir: Path, pool: _Pool, dec, codes: np.ndarray, nearest: np.ndarray,
                     similarity: np.ndarray, bench: pa.Array) -> None:
    """``decisions-part-NNNNNN.parquet`` per partition: one row per alive image, keyed by ``key``."""
    statuses = pa.array(STATUSES, pa.string())
    for p, a, b in pool.ranges():
        nodes = slice(a, b)
        status = statuses.take(pa.array(dec.status[nodes].astype(np.int64)))
        ref = _take(pool.keys, dec.ref[nodes])
        hit = _take(bench, dec.hit[nodes])
        size = pc.cast(pa.array(dec.component_size[nodes]), pa.string())
        code = pa.array(dec.status[nodes])
        reason = pc.if_else(pc.equal(code, 1), _join("hash duplicate of ", ref, " (kept)"), pc.if_else(
            pc.equal(code, 2), _join("copy of ", ref, " (kept; component of ", size, ")"),
            _join("copy of benchmark image ", hit, " (whole component of ", size, " removed)")))
        table = pa.table({
            "key": pool.keys[a:b].cast(pa.string()),
            "status": status,
            "reason": reason,
            "pca_hash": pa.FixedSizeBinaryArray.from_buffers(
                pa.binary(codes.shape[1]), b - a, [None, pa.py_buffer(np.ascontiguousarray(codes[nodes]).tobytes())]),
            "pca_duplicate_of": _take(pool.keys, np.where(dec.status[nodes] == 1, dec.ref[nodes], -1)),
            "copy_component": pa.array(dec.component[nodes], mask=dec.component[nodes] < 0),
            "copy_component_size": pa.array(dec.component_size[nodes], mask=dec.component[nodes] < 0),
            "nearest_duplicate_key": _take(pool.keys, nearest[nodes]),
            "nearest_duplicate_similarity": pa.array(similarity[nodes], mask=np.isnan(similarity[nodes])),
            "benchmark_hit": hit,
        })
        tables.write_parquet(table, out_dir / f"decisions-{tables.partition_name(p)}.parquet")


def _take(values: pa.Array, index: np.ndarray) -> pa.Array:
    """``values[index]`` as strings, null where ``index`` is -1."""
    if not len(values):
        return pa.nulls(len(index), pa.string())
    return values.take(pa.array(index, mask=index < 0)).cast(pa.string())


def _join(*parts) -> pa.Array:
    return pc.binary_join_element_wise(*parts, "")


def _funnel(pool: _Pool, status: np.ndarray, benchmark_images: int) -> dict[str, int]:
    """Images left after each step, like the paper's 1.3B -> 1.1B -> 744M."""
    counts = np.bincount(status.astype(np.int64), minlength=len(STATUSES))
    kept = len(pool) - np.cumsum(counts[1:])
    return {"input": pool.inputs, "described": len(pool), "after_pca_hash": int(kept[0]),
            "after_self_dedup": int(kept[1]), "after_relative_dedup": int(kept[2]),
            "benchmark_images": benchmark_images}


@register
class DedupStage(Stage):
    name = STAGE
    config_model = DedupConfig
    inputs = ("download",)
    steps = (Features, Graph, Table)
    table_step = Table.name

    @classmethod
    def check(cls, config: Any) -> None:
        from curation.sources import check_exists

        cfg: DedupConfig = config.dedup
        h = cfg.hashing
        if h.method == "phash" and (h.thumb_size != 32 or h.bits != 64):
            raise ConfigError("dedup.hashing.method: phash uses 32x32 thumbnails and 64 bits "
                              f"(set thumb_size: 32 and bits: 64; got {h.thumb_size} and {h.bits})")
        if h.bits >= h.thumb_size**2:
            raise ConfigError(f"dedup.hashing.bits: {h.bits} bits need thumbnails of more than {h.bits} pixels")
        if cfg.descriptor.weights is not None and not Path(cfg.descriptor.weights).is_file():
            raise ConfigError(f"dedup.descriptor.weights: '{cfg.descriptor.weights}' is not a file")
        names = [b.name for b in cfg.relative.benchmarks]
        for i, bench in enumerate(cfg.relative.benchmarks):
            if names.count(bench.name) > 1:
                raise ConfigError(f"dedup.relative.benchmarks.{i}.name: '{bench.name}' is used twice")
            check_exists(bench, f"dedup.relative.benchmarks.{i}")
