"""What the ``shard`` stage reads and writes.

Output samples are rows of :data:`SAMPLE_FIELDS`. Keys: a pool image keeps
its pool key (``{pool_key}_{copy}`` for the duplicates that
``collisions: keep_duplicates`` keeps); an ``as_is`` image keeps its image
set key (``<set>-NNNNNNNN``). None contains a dot, so webdataset splits
``{key}.jpg`` / ``{key}.json`` correctly.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation import tables
from curation.atomic import TMP_MARK, atomic_path, read_json, tmp_name
from curation.errors import PartitionError
from curation.stages.retrieve import io as retrieve_io

SHARDS_DIR = "shards"
SHARD_PREFIX = "lvd-"
MANIFEST = "manifest.json"
STAGING_DIR = "as_is"
SAMPLES_FILE = "samples.parquet"
PLACEMENT_DIR = "placement"
JPEG_MAGIC = b"\xff\xd8\xff"

SAMPLE_FIELDS = [
    pa.field("key", pa.string()),  # output key in the shards
    pa.field("dataset", pa.string()),  # retrieve entry: the composition key
    pa.field("mode", pa.string()),  # as_is | sample | cluster
    pa.field("source", pa.string()),  # "pool", or the image set of an as_is image
    pa.field("source_key", pa.string()),  # pool key, or image set key
    pa.field("partition", pa.int64()),  # pool partition (null for as_is)
    pa.field("copy", pa.int32()),
    pa.field("query_dataset", pa.string()),
    pa.field("query_key", pa.string()),
    pa.field("similarity", pa.float32()),
    pa.field("rank", pa.int32()),
    pa.field("cluster", pa.int64()),
    pa.field("path", pa.string()),  # as_is: file, tar member or URL in the image set
    pa.field("label", pa.string()),  # as_is: class folder, if any
    pa.field("stage_error", pa.string()),  # as_is: why the image could not be staged
]
SAMPLE_FIELDS_NAMES = [f.name for f in SAMPLE_FIELDS]
JSON_FIELDS = [
    "dataset",
    "mode",
    "source",
    "source_key",
    "query_dataset",
    "query_key",
    "similarity",
    "rank",
    "cluster",
    "copy",
    "path",
    "label",
]


def clear_shards(shards_dir: Path) -> None:
    """Manifest first, so that no reader sees a manifest over stale shards."""
    (shards_dir / MANIFEST).unlink(missing_ok=True)
    if shards_dir.exists():
        for path in shards_dir.glob(f"{SHARD_PREFIX}*"):
            path.unlink()
        for path in shards_dir.glob(f"*{TMP_MARK}*"):
            path.unlink()
    shards_dir.mkdir(parents=True, exist_ok=True)


def as_jpeg(data: bytes, quality: int) -> bytes:
    """JPEG bytes unchanged; any other format decoded and re-encoded as RGB JPEG."""
    if data[:3] == JPEG_MAGIC:
        return data
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        out = io.BytesIO()
        image.convert("RGB").save(out, format="JPEG", quality=quality)
    return out.getvalue()


def _table(columns: dict[str, Any], n: int) -> pa.Table:
    return pa.table(
        {f.name: pa.array(columns.get(f.name, [None] * n), f.type) for f in SAMPLE_FIELDS},
        schema=pa.schema(SAMPLE_FIELDS),
    )


def pool_samples(entry_name: str, selected: pa.Table) -> pa.Table:
    return pool_rows(selected.filter(pc.equal(selected.column("dataset"), entry_name)))


def pool_rows(rows: pa.Table) -> pa.Table:
    """Output samples of selected pool copies (retrieve's selection rows), in their order."""
    copy = rows.column("copy").to_numpy()
    pool_key = np.asarray(rows.column("key").to_pylist(), dtype=object)
    key = np.where(copy == 0, pool_key, pool_key + "_" + copy.astype(str).astype(object))
    columns = {
        name: rows.column(name)
        for name in (
            "dataset",
            "mode",
            "partition",
            "copy",
            "query_dataset",
            "query_key",
            "similarity",
            "rank",
            "cluster",
        )
    }
    return _table({**columns, "key": key, "source": ["pool"] * rows.num_rows, "source_key": pool_key}, rows.num_rows)


def stage_as_is(entry: Any, source: Any, staging: Path, quality: int) -> pa.Table:
    """Copy an as_is image set into ``staging/<entry>.tar`` (JPEG), for random access."""
    from curation.download.shardwriter import ShardWriter
    from curation.sources import iter_images

    keys, paths, labels = [], [], []
    errors: list[str | None] = []
    with atomic_path(staging / f"{entry.name}.tar") as tmp, ShardWriter(tmp) as writer:
        for key, data, meta in iter_images(source):
            keys.append(key)
            paths.append(meta.get("path"))
            labels.append(meta.get("label"))
            try:
                writer.write_sample(key, as_jpeg(data, quality), {})
                errors.append(None)
            except Exception as err:  # a sample-tier failure: recorded, never raised
                errors.append(f"undecodable image: {type(err).__name__}: {err}")
    n = len(keys)
    return _table(
        {
            "key": keys,
            "dataset": [entry.name] * n,
            "mode": ["as_is"] * n,
            "source": [source.name] * n,
            "source_key": keys,
            "path": paths,
            "label": labels,
            "stage_error": errors,
        },
        n,
    )


def output_samples(ctx: Any, staging: Path) -> pa.Table:
    """Every output sample, in config order: datasets in order, pool images in pool order."""
    from curation.stages.retrieve.stage import resolve_source

    search_dir = ctx.step_dir("search", "retrieve")
    parts = [retrieve_io.read_selection(search_dir, p) for p in ctx.partitions("retrieve")]
    selected = pa.concat_tables(parts) if parts else retrieve_io.SELECTION_SCHEMA.empty_table()
    out = []
    for i, entry in enumerate(ctx.config.retrieve.datasets):
        if entry.mode == "as_is":
            source = resolve_source(ctx.config, entry, f"retrieve.datasets.{i}")
            out.append(stage_as_is(entry, source, staging, ctx.stage_config.jpeg_quality))
        else:
            out.append(pool_samples(entry.name, selected))
    return pa.concat_tables(out) if out else _table({}, 0)


def sample_json(sample: dict, pool_meta: dict, dedup: dict | None = None) -> bytes:
    meta = {name: sample[name] for name in JSON_FIELDS}
    if meta["similarity"] is not None:
        meta["similarity"] = round(meta["similarity"], 6)
    meta.update(key=sample["key"], url=pool_meta.get("url"))
    if dedup is not None:
        meta["dedup"] = dedup
    meta.update(input_columns(pool_meta, meta))
    return json.dumps(meta, sort_keys=True).encode()


def input_columns(pool_meta: dict, taken: dict) -> dict:
    """The URL list's own columns of a pool sample (caption, licence, any extra column).

    ``pool_meta`` is the download stage's per-sample JSON: its own columns are
    left out; an input column whose name ``taken`` already has gets an
    ``input_`` prefix, so that nothing of the user's is overwritten or lost.
    """
    from curation.stages.download.rows import COLUMNS

    return {
        (f"input_{name}" if name in taken else name): value for name, value in pool_meta.items() if name not in COLUMNS
    }


class DedupDecisions:
    """The dedup decision of pool samples, from the dedup stage's table (when the run has one).

    ``get(sample)``: ``{"decision": "unique"}``, or ``{"decision": "kept",
    "duplicates": k, "group_size": k + 1}`` for the image kept out of a group
    of ``k + 1`` (hash groups and copy components together); None for
    ``as_is`` samples and runs without a dedup stage.
    """

    def __init__(self, ctx: Any):
        self.ctx = ctx
        self._parts: dict[int, dict[str, int] | None] = {}

    def _part(self, partition: int) -> dict[str, int] | None:
        if partition not in self._parts:
            path = self.ctx.table_dir("dedup") / f"{tables.partition_name(partition)}.parquet"
            self._parts[partition] = None
            if path.exists():
                import pyarrow.parquet as pq

                if "duplicate_count" in pq.read_schema(path).names:
                    t = pq.read_table(path, columns=["key", "duplicate_count"])
                    keys, counts = t["key"].to_pylist(), t["duplicate_count"].to_pylist()
                    self._parts[partition] = dict(zip(keys, counts, strict=True))
        return self._parts[partition]

    def get(self, sample: dict) -> dict | None:
        if sample["source"] != "pool":
            return None
        counts = self._part(sample["partition"])
        return dedup_decision(counts.get(sample["source_key"]) if counts is not None else None)


def dedup_decision(duplicates: int | None) -> dict | None:
    """The ``dedup`` entry of a sample's JSON from the images dropped in its favour (None: no decision)."""
    if duplicates is None:
        return None
    if duplicates:
        return {"decision": "kept", "duplicates": duplicates, "group_size": duplicates + 1}
    return {"decision": "unique"}


class OpenShard:
    """A shard written under a temporary name, fsynced and renamed on close."""

    def __init__(self, final: Path, writer_cls):
        self.final = final
        self.tmp = tmp_name(final)
        self.writer = writer_cls(self.tmp)
        self.samples = 0

    def close(self, shard_entry):
        self.writer.close()
        fsync(self.tmp)
        os.replace(self.tmp, self.final)
        return shard_entry(self.final, self.final.parent, self.samples)


def fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_placement(step_dir: Path, samples: pa.Table, partitions: list[int]) -> None:
    """Per pool partition: where each selected copy went (or why it did not).

    Rows are found with integer arrays and gathered one partition at a time,
    so that no copy of ``samples`` is ever made whole.
    """
    pool = np.flatnonzero(pc.equal(samples.column("source"), "pool").to_numpy(zero_copy_only=False))
    part = samples.column("partition").fill_null(-1).to_numpy()[pool]
    by_part = np.argsort(part, kind="stable")
    pool, part = pool[by_part], part[by_part]
    for p in partitions:
        lo, hi = np.searchsorted(part, [p, p + 1])
        tables.write_parquet(_placement(samples.take(pool[lo:hi])), placement_path(step_dir, p))


def _placement(pool: pa.Table) -> pa.Table:
    pool = pool.sort_by([("source_key", "ascending"), ("copy", "ascending")])
    key = pool.column("source_key").to_numpy(zero_copy_only=False)
    written = pool.column("shard").is_valid().to_numpy(zero_copy_only=False)
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]]) if len(key) else np.zeros(0, np.int64)
    per_image = np.add.reduceat(written.astype(np.int32), starts) if len(key) else np.zeros(0, np.int32)
    counts = np.diff(np.r_[starts, len(key)])
    return pa.table(
        {
            "key": pool.column("source_key"),
            "copy": pool.column("copy"),
            "dataset": pool.column("dataset"),
            "shard": pool.column("shard"),
            "shard_key": pool.column("key"),
            "error": pool.column("error"),
            "copies_written": pa.array(np.repeat(per_image, counts), pa.int32()),
        }
    )


def placement_path(step_dir: Path, partition: int) -> Path:
    return Path(step_dir) / PLACEMENT_DIR / f"{tables.partition_name(partition)}.parquet"


def read_placement(step_dir: Path, partition: int) -> pa.Table:
    path = placement_path(step_dir, partition)
    if not path.exists():
        raise PartitionError(f"{path} is missing: rerun the shard stage's write step")
    return tables.read_parquet(path)


def composition(samples: pa.Table, names: list[str]) -> dict[str, int]:
    """Written samples per retrieve entry (every entry listed, zeros included)."""
    written = samples.column("dataset").filter(samples.column("shard").is_valid())
    counts = {c["values"]: c["counts"] for c in pc.value_counts(written).to_pylist()}
    return {name: int(counts.get(name, 0)) for name in names}


def manifest_extra(ctx: Any, samples: pa.Table) -> dict[str, Any]:
    from curation.stages.retrieve.stage import resolve_source

    config = ctx.config
    summary_path = ctx.step_dir("search", "retrieve") / "summary.json"
    datasets = {
        e.name: {"mode": e.mode, "source": resolve_source(config, e, f"retrieve.datasets.{i}").name}
        for i, e in enumerate(config.retrieve.datasets)
    }
    return {
        "datasets": datasets,
        "collisions": config.retrieve.collisions,
        "retrieval": read_json(summary_path) if summary_path.exists() else {},
        "shuffle": ctx.stage_config.shuffle,
        "seed": ctx.seed,
        "not_written": int(samples.column("shard").null_count),
    }


def remove_staging(staging: Path) -> None:
    if staging.exists():
        shutil.rmtree(staging)
