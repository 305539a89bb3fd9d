"""The shard stage's plan and parallel writing: what its steps read and write.

1. ``locate`` (map, per pool partition): one scan of the partition's
   download tar, no image read: for every selected copy, where its image and
   download JSON lie in the tar and how many bytes its shard JSON takes. One
   Parquet side file per partition (:data:`LOCATE_FIELDS` after the sample
   fields). Memory: one partition's tar index and selection.
2. ``plan`` (global, tables only): every output sample in order (config
   order, or one seeded permutation), each one's shard from the sizes
   (:func:`curation.algorithms.shard_plan.assign_shards`), one Parquet file
   per write unit (a range of shards) holding its samples in order, the
   placement of every pool copy, and ``plan.json``. Memory: the sample
   table, about 550 bytes per output sample measured (78 GB at 142 million).
3. ``write`` (map, per unit): reads each batch of its samples grouped by
   source tar, by offset (one open per tar per batch, forward reads), writes
   the samples in plan order into its shards (temporary name, fsync,
   rename), and lists the shards in its completion marker. Memory: one batch
   of images, whatever the pool size.
4. ``manifest`` (global): the manifest from the units' markers, written last.

A plan and a sequential writer in the same order give byte-identical shards.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation import tables
from curation.algorithms import shard_plan
from curation.atomic import read_json, write_json
from curation.errors import PartitionError
from curation.stages.base import PartitionOutput
from curation.stages.retrieve import io as retrieve_io
from curation.stages.shard import io as io

LOCATE_SUFFIX = "samples.parquet"
UNITS_DIR = "units"
PLAN_FILE = "plan.json"
LOCATE_FIELDS = [
    pa.field("offset", pa.int64()),  # image data offset in its source tar
    pa.field("image_bytes", pa.int64()),
    pa.field("meta_offset", pa.int64()),  # pool: the download stage's JSON member (null: none)
    pa.field("meta_bytes", pa.int64()),
    pa.field("json_bytes", pa.int64()),  # bytes of the sample's JSON in its shard
    pa.field("duplicates", pa.int64()),  # dedup decision: images dropped for this one (null: none)
]
LOCATED = pa.schema(io.SAMPLE_FIELDS + LOCATE_FIELDS)
UNIT_FIELDS = [f for f in LOCATED if f.name not in ("key", "stage_error")] + [pa.field("shard", pa.int64())]


def _located(rows: pa.Table, columns: dict[str, list]) -> pa.Table:
    arrays = [rows.column(f.name) for f in io.SAMPLE_FIELDS if f.name != "stage_error"]
    arrays += [pa.array(columns["stage_error"], pa.string())]
    arrays += [pa.array(columns[f.name], f.type) for f in LOCATE_FIELDS]
    names = [f.name for f in io.SAMPLE_FIELDS if f.name != "stage_error"] + ["stage_error"]
    return pa.Table.from_arrays(arrays, names + [f.name for f in LOCATE_FIELDS]).select(LOCATED.names).cast(LOCATED)


def _locate_rows(rows: pa.Table, images: Any, pool: bool, dedup: io.DedupDecisions | None) -> pa.Table:
    """``rows`` (sample fields, in order) with their :data:`LOCATE_FIELDS`, from one tar's index."""
    names = ["stage_error"] + [f.name for f in LOCATE_FIELDS]
    columns: dict[str, list] = {name: [] for name in names}
    meta_key, meta = None, {}
    for sample in rows.to_pylist():
        key, error = sample["source_key"], sample["stage_error"]
        slot = images.image_slot(key) if error is None else None
        values = dict.fromkeys(names)
        if error is None and slot is None:
            values["stage_error"] = f"LookupError: image {key} is missing from {images.path}"
        elif slot is not None:
            if pool and key != meta_key:  # copies of one image are adjacent: its JSON is read once
                meta_key, meta = key, images.meta(key)
            decision = dedup.get(sample) if dedup is not None else None
            meta_slot = images.meta_slot(key) if pool else None
            if meta_slot is not None:
                values.update(meta_offset=meta_slot[0], meta_bytes=meta_slot[1])
            values.update(
                offset=slot[0],
                image_bytes=slot[1],
                json_bytes=len(io.sample_json(sample, meta if pool else {}, decision)),
                duplicates=None if decision is None else decision.get("duplicates", 0),
            )
        else:
            values["stage_error"] = error
        for name in names:
            columns[name].append(values[name])
    return _located(rows, columns)


def locate_pool(ctx: Any, partition: int) -> pa.Table:
    """Every selected copy of one pool partition (all datasets, selection order), located in its tar."""
    from curation.imagestore import pool_images

    selected = retrieve_io.read_selection(ctx.step_dir("search", "retrieve"), partition)
    return _locate_rows(io.pool_rows(selected), pool_images(ctx.run_dir, partition), True, io.DedupDecisions(ctx))


def staged_path(staging: Path, dataset: str) -> Path:
    return Path(staging) / f"{dataset}.tar"


def stage_entry(ctx: Any, staging: Path, index: int) -> pa.Table:
    """Stage the ``index``-th retrieve entry (``as_is``) and locate its samples in the staged tar."""
    from curation.imagestore import TarImages
    from curation.stages.retrieve.stage import resolve_source

    entry = ctx.config.retrieve.datasets[index]
    source = resolve_source(ctx.config, entry, f"retrieve.datasets.{index}")
    rows = io.stage_as_is(entry, source, staging, ctx.stage_config.jpeg_quality)
    return _locate_rows(rows, TarImages(staged_path(staging, entry.name)), False, None)


def ensure_staged(ctx: Any, staging: Path, dataset: str) -> None:
    """Stage an ``as_is`` set again when its staged tar is gone (removed after a run, then a shard was lost).

    Staging is deterministic, so the plan's offsets hold for the new copy.
    """
    if staged_path(staging, dataset).exists():
        return
    names = [e.name for e in ctx.config.retrieve.datasets]
    stage_entry(ctx, staging, names.index(dataset))


def planned_samples(ctx: Any, locate_dir: Path, staging: Path) -> tuple[pa.Table, np.ndarray]:
    """Every output sample, located, and (n,) int64 their config order (row indices into the table).

    Config order: datasets in order, pool copies in pool order. The table is
    the located pool partitions and the staged ``as_is`` sets side by side
    (chunks, not copied); the order is an index, so that it is never copied
    into that order either.
    """
    parts = [
        tables.read_parquet(PartitionOutput(locate_dir, p).final(LOCATE_SUFFIX)) for p in ctx.partitions("retrieve")
    ]
    pool = pa.concat_tables(parts) if parts else LOCATED.empty_table()
    chunks, index, end = [pool], [], pool.num_rows
    for i, entry in enumerate(ctx.config.retrieve.datasets):
        if entry.mode == "as_is":
            chunks.append(stage_entry(ctx, staging, i))
            index.append(np.arange(end, end + chunks[-1].num_rows))
            end += chunks[-1].num_rows
        else:
            index.append(np.flatnonzero(pc.equal(pool.column("dataset"), entry.name).to_numpy(zero_copy_only=False)))
    order = np.concatenate(index).astype(np.int64) if index else np.zeros(0, np.int64)
    if len(order) != end:
        raise PartitionError(
            "the retrieve stage's selection names datasets that retrieve.datasets lacks: rerun the retrieve stage"
        )
    del parts, pool
    return _combined(chunks), order


def _combined(chunks: list[pa.Table]) -> pa.Table:
    """The tables as one table of one chunk per column (``take`` on many chunks costs the whole column).

    Built column by column, dropping each from ``chunks`` once copied, so that
    the peak is the table plus one column, not twice the table.
    """
    schema = chunks[0].schema
    table = pa.concat_tables(chunks)
    chunks.clear()
    arrays = []
    for name in schema.names:
        arrays.append(table.column(name).combine_chunks())
        table = table.drop_columns([name])
    return pa.Table.from_arrays(arrays, schema=schema)


def write_plan(ctx: Any, samples: pa.Table, order: np.ndarray, out_dir: Path, cfg: Any) -> dict[str, Any]:
    """Decide every sample's shard; write the unit files, ``samples.parquet``, the placement and ``plan.json``.

    ``order``: (n,) the output order, a permutation of ``samples``' rows. The
    table is never copied whole: only numeric columns are permuted, and rows
    are gathered one unit (or chunk) at a time.
    """
    written = samples.column("stage_error").is_null().to_numpy(zero_copy_only=False)
    sizes = shard_plan.sample_bytes(
        samples.column("image_bytes").fill_null(0).to_numpy(), samples.column("json_bytes").fill_null(0).to_numpy()
    )
    in_order = shard_plan.assign_shards(
        sizes[order], written[order], cfg.max_samples_per_shard, cfg.max_bytes_per_shard
    )
    shard = np.empty_like(in_order)
    shard[order] = in_order
    count = int(in_order.max()) + 1 if written.any() else 0
    listed = (
        samples.select(io.SAMPLE_FIELDS_NAMES)
        .append_column("shard", shard_names(shard, count))
        .append_column("error", samples.column("stage_error"))
    )
    _write_taken(listed, order, out_dir / io.SAMPLES_FILE)
    io.write_placement(out_dir, listed, ctx.partitions("retrieve"))
    rows = order[in_order >= 0]  # written samples in output order: their shards never decrease
    bounds = shard_plan.shard_units(count, cfg.shards_per_task)
    starts = np.searchsorted(in_order[in_order >= 0], bounds)
    for unit in range(len(bounds) - 1):
        part = samples.take(rows[starts[unit] : starts[unit + 1]])
        table = tables.status_table(part.column("key"), ["success"] * part.num_rows)
        for field in UNIT_FIELDS[:-1]:
            table = table.append_column(field, part.column(field.name))
        table = table.append_column(UNIT_FIELDS[-1], pa.array(shard[rows[starts[unit] : starts[unit + 1]]]))
        tables.write_parquet(table, unit_path(out_dir, unit))
    plan = {
        "shards": count,
        "units": len(bounds) - 1,
        "composition": io.composition(listed, [d.name for d in ctx.config.retrieve.datasets]),
        "extra": io.manifest_extra(ctx, listed),
    }
    write_json(out_dir / PLAN_FILE, plan)
    return plan


def _write_taken(table: pa.Table, order: np.ndarray, path: Path, chunk: int = 1 << 20) -> None:
    """``table.take(order)`` written to Parquet a chunk of rows at a time (atomically)."""
    import pyarrow.parquet as pq

    from curation.atomic import atomic_path

    with atomic_path(path) as tmp, pq.ParquetWriter(tmp, table.schema, compression="zstd") as writer:
        for start in range(0, max(len(order), 1), chunk):
            writer.write_table(table.take(order[start : start + chunk]))


def shard_name(shard: int) -> str:
    return f"{io.SHARD_PREFIX}{shard:06d}.tar"


def shard_names(shard: np.ndarray, count: int) -> pa.Array:
    """(n,) shard file names of shard ids (null for -1), built without a Python string per sample."""
    indices = pa.array(shard, pa.int64(), mask=shard < 0)
    names = pa.array([shard_name(s) for s in range(count)], pa.string())
    return pa.DictionaryArray.from_arrays(indices, names).cast(pa.string())


def unit_path(plan_dir: Path, unit: int) -> Path:
    return Path(plan_dir) / UNITS_DIR / f"{tables.partition_name(unit)}.parquet"


def read_plan(plan_dir: Path) -> dict[str, Any]:
    path = Path(plan_dir) / PLAN_FILE
    if not path.exists():
        raise PartitionError(f"{path} is missing: rerun the shard stage's plan step")
    return read_json(path)


class UnitWriter:
    """Writes one unit's samples, batch by batch, into its shards under ``shards_dir``."""

    def __init__(self, ctx: Any, shards_dir: Path, staging: Path):
        self.ctx, self.shards_dir, self.staging = ctx, Path(shards_dir), Path(staging)
        self.entries: list = []
        self._open: io.OpenShard | None = None
        self._shard = -1

    def _source(self, row: dict) -> Path:
        from curation.imagestore import pool_tar

        if row["source"] == "pool":
            return pool_tar(self.ctx.run_dir, row["partition"])
        ensure_staged(self.ctx, self.staging, row["dataset"])
        return staged_path(self.staging, row["dataset"])

    def _read(self, rows: list[dict]) -> list[tuple[bytes, dict]]:
        """Image bytes and download JSON of each row, read grouped by tar, forwards."""
        paths = [self._source(r) for r in rows]
        codes = np.unique([str(p) for p in paths], return_inverse=True)[1]
        out: list[Any] = [None] * len(rows)
        current, f = None, None
        try:
            for i in shard_plan.read_order(codes, [r["offset"] for r in rows]):
                if paths[i] != current:
                    if f is not None:
                        f.close()
                    current, f = paths[i], _open(paths[i])
                row = rows[i]
                data = _pread(f, row["offset"], row["image_bytes"], paths[i])
                meta = (
                    {}
                    if row["meta_offset"] is None
                    else json.loads(_pread(f, row["meta_offset"], row["meta_bytes"], paths[i]))
                )
                out[i] = (data, meta)
        finally:
            if f is not None:
                f.close()
        return out

    def write(self, batch: pa.Table, quality: int) -> None:
        from curation.download.shardwriter import ShardWriter
        from curation.manifest import shard_entry

        rows = batch.to_pylist()
        for row, (data, meta) in zip(rows, self._read(rows), strict=True):
            if row["shard"] != self._shard:
                self._close(shard_entry)
                self._shard = row["shard"]
                self._open = io.OpenShard(self.shards_dir / shard_name(row["shard"]), ShardWriter)
            assert self._open is not None  # opened for this row's shard
            blob = io.sample_json(row, meta, io.dedup_decision(row["duplicates"]))
            self._open.writer.add(f"{row['key']}.jpg", io.as_jpeg(data, quality))
            self._open.writer.add(f"{row['key']}.json", blob)
            self._open.samples += 1

    def _close(self, shard_entry) -> None:
        if self._open is not None:
            self.entries.append(self._open.close(shard_entry))
            self._open = None

    def close(self) -> dict[str, Any]:
        """Close the last shard; the marker fields that list the shards (paths relative to the run directory)."""
        from curation.manifest import shard_entry

        self._close(shard_entry)
        io.fsync(self.shards_dir)
        prefix = self.shards_dir.relative_to(self.ctx.run_dir).as_posix()
        return {
            "shards": [asdict(e) for e in self.entries],
            "outputs": {f"{prefix}/{e.path}": e.bytes for e in self.entries},
            "outputs_sha256": {f"{prefix}/{e.path}": e.sha256 for e in self.entries},
        }


def _open(path: Path):
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise PartitionError(f"{path} is missing: rerun the stage that wrote it") from None


def _pread(f, offset: int, size: int, path: Path) -> bytes:
    data = os.pread(f.fileno(), size, offset)
    if len(data) != size:
        raise PartitionError(
            f"{path}: {size} bytes expected at offset {offset}, read {len(data)}: the tar "
            "changed since the shard plan; rerun the shard stage"
        )
    return data


def unit_entries(write_dir: Path, units: int) -> list:
    """The shard entries of every committed unit, in shard order (from their completion markers)."""
    from curation.layout import STATS_SUFFIX, partition_path
    from curation.manifest import ShardEntry

    entries = []
    for unit in range(units):
        entries += [ShardEntry(**e) for e in read_json(partition_path(write_dir, unit, STATS_SUFFIX))["shards"]]
    return entries
