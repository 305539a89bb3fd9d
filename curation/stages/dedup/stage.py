"""The dedup stage: hash and copy-detection (SSCD) deduplication, as in LVD-142M.

Steps (see ``docs/dedup.md``):

- ``features`` (map): each image is decoded once into a grayscale thumbnail
  (hash input), the source of its geometric variants and, when copy or
  relative dedup is on, an SSCD descriptor; side files
  ``features.files/part-NNNNNN.thumbs.npy`` ``(m, s, s) uint8``, ``.sources.npy``
  ``(m, S, S) uint8`` and ``.desc.npy`` ``(m, d)`` (``d = 0``
  without a descriptor); row ``j`` belongs to the table row whose
  ``feature_row`` is ``j``.
- ``graph`` (global): the PCA hash fitted on a sample, then helpers
  (``dedup.graph.workers``, a contiguous range of partitions each; see
  :mod:`curation.stages.dedup.shards`) compute codes, exact Hamming pairs
  with variant queries, the k-NN edges over the hash survivors and the
  relative-dedup edges, each streaming the other partitions' files; this
  process only unions pairs and edges into components over the images they
  touch (:mod:`curation.algorithms.sparse_graph`: no per-image array of the
  pool, no descriptors, no index) and decides those images; the helpers
  write ``decisions-part-NNNNNN.parquet`` (keyed by sample key) for their
  partitions, and this process the ``funnel.json`` of their counts.
- ``table`` (map): joins the decisions onto each partition: the stage table.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation import tables
from curation.algorithms.knn import unit_rows
from curation.atomic import write_json
from curation.errors import PartitionError
from curation.stages.base import (
    GlobalStep,
    MapStep,
    PartitionOutput,
    Resources,
    Stage,
    device_gpus,
)
from curation.stages.dedup.config import DedupConfig
from curation.stages.dedup.decisions import STATUSES  # noqa: F401  (the stage's statuses, in funnel order)
from curation.stages.dedup.descriptors import (
    DESCRIPTORS,
    SOURCES,
    THUMBS,
    load_descriptor_model,
)
from curation.stages.dedup.pool import Pool
from curation.stages.dedup.streams import take_rows
from curation.stages.registry import register

log = logging.getLogger("curation")
STAGE = "dedup"
FUNNEL_FILE = "funnel.json"


class Features(MapStep[DedupConfig]):
    """Thumbnails and SSCD descriptors of each alive image (side files)."""

    name = "features"

    def resources(self) -> Resources:
        d = self.cfg.descriptor
        return Resources(num_cpus=d.num_cpus, num_gpus=device_gpus(d.device) if self.cfg.describes else 0)

    def batch_size(self) -> int:
        return max(256, self.cfg.descriptor.batch_size)

    def setup(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        from curation.models.inference import Prefetch, decode_thread_count, submit
        from curation.models.sscd import decoder

        self.embed, self.spec, self.source = load_descriptor_model(self.cfg, self.ctx.seed)
        decode = decoder(self.spec)
        # Hash only (no model): the decode threads are the step's own.
        pool = (
            self.embed.pool
            if self.embed is not None
            else ThreadPoolExecutor(decode_thread_count(0, self.cfg.descriptor.num_cpus))
        )
        self.decoding = Prefetch(lambda batch: submit(batch.column("key").to_pylist(), decode, pool, self._fetch))

    def _fetch(self, key: str) -> bytes | None:
        # On the decode threads: TarImages opens the file per read. None: missing_image.
        return self.images.get(key) if key in self.images else None

    def open(self, partition: int, out: PartitionOutput) -> None:
        from curation.imagestore import pool_images

        self.images, self.out = pool_images(self.ctx.run_dir, partition), out
        self.thumbs: list[np.ndarray] = []
        self.sources: list[np.ndarray] = []
        self.descs: list[np.ndarray] = []
        self.rows = 0
        self.decoding.clear()

    def prefetch(self, batch: pa.Table) -> None:
        self.decoding.start(batch)

    def process_batch(self, batch: pa.Table) -> pa.Table:
        from curation.models.sscd import describe_decoded

        keys = batch.column("key").to_pylist()
        sources, thumbs, desc, width, height, reasons, errors = describe_decoded(
            self.decoding.take(batch), self.embed, self.spec
        )
        failed = np.array([r is not None for r in reasons], dtype=bool)
        out = tables.drop(batch.select(tables.STATUS_COLUMNS), failed, STAGE, reasons, errors)
        row = np.full(len(keys), -1, np.int64)
        row[~failed] = self.rows + np.arange(len(desc))
        self.rows += len(desc)
        self.thumbs.append(thumbs)
        self.sources.append(sources)
        self.descs.append(desc.astype(self.cfg.descriptor.storage_dtype))
        wide = np.zeros((2, len(keys)), np.int64)
        wide[:, ~failed] = width, height
        return (
            out.append_column("width", pa.array(wide[0], mask=failed))
            .append_column("height", pa.array(wide[1], mask=failed))
            .append_column("feature_row", pa.array(row, mask=failed))
        )

    def close(self) -> dict[str, Any]:
        s, d, v = self.cfg.hashing.thumb_size, self.cfg.descriptor, self.spec.source_size
        thumbs = np.concatenate(self.thumbs) if self.thumbs else np.zeros((0, s, s), np.uint8)
        sources = np.concatenate(self.sources) if self.sources else np.zeros((0, v, v), np.uint8)
        dims = d.dims if self.embed is not None else 0
        descs = np.concatenate(self.descs) if self.descs else np.zeros((0, dims), d.storage_dtype)
        for suffix, array in ((THUMBS, thumbs), (SOURCES, sources), (DESCRIPTORS, descs)):
            with open(self.out.path(suffix), "wb") as fh:
                np.save(fh, array, allow_pickle=False)
        return {"described": len(descs), "descriptor_weights": self.source}


class Graph(GlobalStep[DedupConfig]):
    """Hash groups, the copy-detection graph and benchmark leaks over the whole pool."""

    name = "graph"

    def resources(self) -> Resources:
        g = self.cfg.graph
        return Resources(
            num_cpus=g.num_cpus, num_gpus=g.num_gpus, memory=int(g.memory_gb * 2**30), key="dedup.graph.memory_gb"
        )

    def worker_resources(self) -> Resources:
        w = self.cfg.graph.workers
        return Resources(
            num_cpus=w.num_cpus,
            num_gpus=w.num_gpus,
            memory=int(w.memory_gb * 2**30),
            key="dedup.graph.workers.num_cpus / dedup.graph.workers.num_gpus / dedup.graph.workers.memory_gb",
        )

    def requests(self) -> list[tuple[str, Resources]]:
        return [*super().requests(), ("graph workers", self.worker_resources())]

    def run(self, out_dir: Path) -> dict[str, Any]:
        import faiss

        from curation.stages.dedup import passes as dedup_passes

        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(self.cfg.graph.num_cpus)  # the CPUs this task holds
        pool = Pool(self.ctx.step_dir(Features.name), scalars=False)  # sizes only: no per-image array
        helpers = dedup_passes.start(self, pool, out_dir, self.worker_resources())
        try:
            stats = self._run(out_dir, pool, helpers)
        finally:
            workers = dedup_passes.finish(helpers)
            faiss.omp_set_num_threads(threads)
        return {**stats, "workers": [{"partitions": len(r), **w} for r, w in zip(helpers.ranges, workers, strict=True)]}

    def _run(self, out_dir: Path, pool: Pool, helpers: Any) -> dict[str, Any]:
        from curation.algorithms import sparse_graph as sg
        from curation.stages.dedup import copy as dedup_copy
        from curation.stages.dedup import hash as dedup_hash
        from curation.stages.dedup import passes as dedup_passes

        timer, cfg, n = _Timer(lambda k: self.report_progress(k, len(_Timer.PHASES))), self.cfg, len(pool)
        code, info = dedup_hash.coder(pool, cfg.hashing, self.ctx.seed, out_dir)
        hashed, found = dedup_passes.hash_graph(helpers)
        info = dedup_hash.hash_info({**info, **found}, cfg.hashing)
        timer.lap("hash_groups")

        def rank_of(ids: np.ndarray) -> np.ndarray:  # the keep policy, from the areas of these images only
            if cfg.keep != "largest":
                return np.zeros(len(ids), np.int64)
            return -take_rows(helpers.work, "areas", helpers.offsets, ids)

        hash_rep = sg.representatives(hashed, rank_of(hashed.nodes))
        hash_dups = hashed.nodes[hash_rep != hashed.nodes]
        copy = dedup_copy.copy_pass(self, n, helpers, hash_dups, rank_of, timer)
        if cfg.relative.benchmarks and not cfg.relative_on and cfg.relative.enabled is None:  # matched by hash
            copy.bench_names, thumbs, copy.bench_info = dedup_copy.benchmark_thumbs(self)
            copy.leak_nodes, copy.leak_hit = dedup_hash.leak_hits(code, hashed.nodes, hash_rep, thumbs, helpers, n)
            timer.lap("relative_hash")
        records = sg.decide(hashed.nodes, hash_rep, copy.graph, copy.rep, copy.leak_nodes, copy.leak_hit)
        funnel = self._write(out_dir, pool, helpers, records, hash_dups, copy)
        timer.lap("write")
        held = hashed.nbytes + hash_rep.nbytes + copy.nbytes + records.nbytes
        return {
            "funnel": funnel,
            "hash": info,
            "benchmarks": copy.bench_info,
            "copy_dedup": cfg.copy_on,
            "relative_dedup": cfg.relative_on,
            "index": copy.kind,
            "edges": copy.edges,
            "seconds": timer.laps,
            "held": {"touched": len(records.ids), "bytes": held},
        }

    def _write(self, out_dir: Path, pool: Pool, helpers: Any, records: Any, hash_dups: np.ndarray, copy: Any) -> dict:
        """The helpers write their partitions' decisions from the decided images; this process, the funnel
        of their status counts."""
        from curation.stages.dedup import decisions as dedup_decisions

        dedup_decisions.save_records(helpers.work, records, hash_dups)
        args = [(i, helpers.offsets, copy.unit_offsets, copy.bench_names) for i in range(len(helpers.ranges))]
        counts = np.sum(helpers.call("decide", args), axis=0)
        funnel = dedup_decisions.funnel(pool.inputs, len(pool), counts, len(copy.bench_names))
        write_json(out_dir / FUNNEL_FILE, funnel)
        log.info("dedup funnel: %s", funnel)
        return funnel

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
            keys, desc, failed = describe_all(images, embed, spec)
            names += [f"{bench.name}:{key}" for key in keys]
            parts.append(desc)
            info[bench.name] = {"images": len(keys), "failed": failed}
        return names, unit_rows(np.concatenate(parts), mean), info


class Table(MapStep[DedupConfig]):
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
        out = tables.drop(
            batch.select(tables.STATUS_COLUMNS),
            status != tables.SUCCESS,
            STAGE,
            status,
            dec.column("reason").to_pylist(),
        )
        for name in ("width", "height"):
            out = out.append_column(name, batch.column(name))
        for name in dec.column_names[3:]:
            out = out.append_column(name, dec.column(name))
        return out


class _Timer:
    """Seconds per phase of the graph step; each lap is also reported as progress."""

    PHASES = ("hash_groups", "descriptors", "copy_graph", "relative", "write")

    def __init__(self, on_lap=None):
        import time

        self.clock, self.last, self.laps, self.on_lap = time.perf_counter, time.perf_counter(), {}, on_lap

    def lap(self, name: str) -> None:
        now = self.clock()
        self.laps[name] = round(now - self.last, 3)
        self.last = now
        if self.on_lap is not None:  # optional phases are skipped: never past the last one before "write"
            total = len(self.PHASES)
            self.on_lap(total if name == "write" else min(len(self.laps), total - 1))


@register
class DedupStage(Stage):
    name = STAGE
    config_model = DedupConfig
    inputs = ("download",)
    steps = (Features, Graph, Table)
    table_step = Table.name

    @classmethod
    def check(cls, config: Any) -> None:
        from curation.stages.dedup.checks import check_config

        check_config(config.dedup)
