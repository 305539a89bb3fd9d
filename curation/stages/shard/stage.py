"""Stage ``shard``: the final LVD-style webdataset shards and their manifest.

Output samples are the pool copies the ``retrieve`` stage selected and the
images of its ``as_is`` datasets, in config order or one seeded shuffle,
written as ``<run_dir>/shards/lvd-NNNNNN.tar`` with ``{key}.jpg`` +
``{key}.json`` per sample, rolled by sample count and bytes. Steps (their
files and memory: :mod:`curation.stages.shard.write`):

1. ``locate`` (map, per pool partition): where each selected image lies in
   its download tar, and its size in a shard;
2. ``plan`` (global, tables only): every sample's shard; the samples of each
   write unit (``shards_per_task`` shards), ``samples.parquet`` (every output
   sample) and ``placement/part-NNNNNN.parquet`` (where each selected pool
   copy went); ``as_is`` images are staged under ``stages/shard/as_is``;
3. ``write`` (map, per unit): its shards, each under a temporary name,
   fsynced and renamed; its completion marker lists them, so a lost shard
   redoes its unit only;
4. ``manifest`` (global): ``manifest.json`` from the units' markers, last;
5. ``table`` (map, the stage table): one row per pool sample; selected
   samples whose image could not be written get ``not_written``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from curation import tables
from curation.layout import stage_dir
from curation.section import Section
from curation.stages.base import GlobalStep, MapStep, PartitionOutput, Stage
from curation.stages.registry import register
from curation.stages.retrieve.io import join_status
from curation.stages.shard import io as io
from curation.stages.shard import write as sw

STAGE = "shard"
NOT_WRITTEN = "not_written"


class ShardConfig(Section):
    max_samples_per_shard: int = Field(10_000, ge=1, description="samples per shard at most")
    max_bytes_per_shard: int = Field(
        1_000_000_000, ge=1, description="bytes per shard at most (a single larger sample gets its own shard)"
    )
    shuffle: bool = Field(True, description="seeded shuffle of all samples (seed: the run's seed)")
    jpeg_quality: int = Field(95, ge=1, le=100, description="quality when a non-JPEG image is re-encoded")
    keep_staging: bool = Field(False, description="keep the copies of as_is images staged under stages/shard/as_is")
    shards_per_task: int = Field(
        1, ge=1, description="shards one write task writes (a task's memory: one batch of images, whatever this is)"
    )


class Locate(MapStep[ShardConfig]):
    """Per pool partition: its selected copies located in the download tar (a side Parquet file)."""

    name = "locate"
    alive_only = False  # the work is per partition; rows pass through

    def open(self, partition: int, out: PartitionOutput) -> None:
        tables.write_parquet(sw.locate_pool(self.ctx, partition), Path(out.path(sw.LOCATE_SUFFIX)))

    def process_batch(self, batch: pa.Table) -> pa.Table:
        return batch.select(tables.STATUS_COLUMNS)


class Plan(GlobalStep[ShardConfig]):
    """Every output sample's shard, from the located samples; one file of samples per write unit."""

    name = "plan"

    def run(self, out_dir: Path) -> dict[str, Any]:
        io.clear_shards(shards_dir(self.ctx))
        shutil.rmtree(out_dir / sw.UNITS_DIR, ignore_errors=True)
        self.report_progress(0, 2)
        samples, order = sw.planned_samples(self.ctx, self.ctx.step_dir(Locate.name), staging_dir(self.ctx))
        if self.cfg.shuffle:  # the permutation of the config order that the single-process writer applied
            order = order[np.random.default_rng(self.ctx.seed).permutation(len(order))]
        self.report_progress(1, 2)
        plan = sw.write_plan(self.ctx, samples, order, out_dir, self.cfg)
        return {
            "shards": plan["shards"],
            "units": plan["units"],
            "samples": sum(plan["composition"].values()),
            "not_written": plan["extra"]["not_written"],
        }


class Write(MapStep[ShardConfig]):
    """Per write unit: its shards, from its planned samples read grouped by source tar."""

    name = "write"
    pool_partitions = False  # units of shards: a redo of one reaches the manifest and the table only

    def batch_size(self) -> int:
        return 256

    def _unit(self, unit: int) -> Path:
        return sw.unit_path(self.ctx.step_dir(Plan.name), unit)

    def partitions(self) -> list[int]:
        return list(range(sw.read_plan(self.ctx.step_dir(Plan.name))["units"]))

    def num_rows(self, partition: int) -> int:
        import pyarrow.parquet as pq

        return pq.ParquetFile(self._unit(partition)).metadata.num_rows

    def read(self, partition: int):
        yield from tables.iter_batches(self._unit(partition), self.batch_size())

    def open(self, partition: int, out: PartitionOutput) -> None:
        self.writer = sw.UnitWriter(self.ctx, shards_dir(self.ctx), staging_dir(self.ctx))

    def process_batch(self, batch: pa.Table) -> pa.Table:
        self.writer.write(batch, self.cfg.jpeg_quality)
        names = pa.array([sw.shard_name(s) for s in batch.column("shard").to_pylist()], pa.string())
        return batch.select(tables.STATUS_COLUMNS).append_column("shard", names)

    def close(self) -> dict[str, Any]:
        return self.writer.close()


class Manifest(GlobalStep[ShardConfig]):
    """The manifest, from the shards the write units committed; written last."""

    name = "manifest"

    def run(self, out_dir: Path) -> dict[str, Any]:
        from curation.manifest import write_manifest

        plan = sw.read_plan(self.ctx.step_dir(Plan.name))
        entries = sw.unit_entries(self.ctx.step_dir(Write.name), plan["units"])
        manifest = write_manifest(
            shards_dir(self.ctx) / io.MANIFEST,
            entries,
            plan["composition"],
            self.ctx.config.content_hash(),
            self.ctx.config.name,
            plan["extra"],
        )
        if not self.cfg.keep_staging:
            io.remove_staging(staging_dir(self.ctx))
        return {
            "shards": len(entries),
            "samples": manifest.num_samples,
            "bytes": manifest.num_bytes,
            "not_written": plan["extra"]["not_written"],
            "composition": plan["composition"],
        }

    def outputs(self) -> list[Path]:
        return [shards_dir(self.ctx) / io.MANIFEST]


def shards_dir(ctx: Any) -> Path:
    return Path(ctx.run_dir) / io.SHARDS_DIR


def staging_dir(ctx: Any) -> Path:
    """``as_is`` images staged for random access; outside any step directory, so no marker lists them."""
    return stage_dir(ctx.run_dir, STAGE) / io.STAGING_DIR


class Table(MapStep[ShardConfig]):
    """The stage table: where each selected pool sample went."""

    name = "table"

    def open(self, partition: int, out: PartitionOutput) -> None:
        placed = io.read_placement(self.ctx.step_dir(Plan.name), partition)
        self.placed = placed.filter(pc.equal(placed.column("copy"), 0))

    def process_batch(self, batch: pa.Table) -> pa.Table:
        return join_status(
            batch,
            self.placed,
            ["dataset", "shard", "shard_key", "copies_written"],
            STAGE,
            NOT_WRITTEN,
            present="shard",
            reason="not selected by the retrieve stage's search",
        )


@register
class ShardStage(Stage):
    name = STAGE
    config_model = ShardConfig
    inputs = ("retrieve",)
    steps = (Locate, Plan, Write, Manifest, Table)
    table_step = "table"

    @classmethod
    def check(cls, config: Any) -> None:
        from curation.errors import ConfigError
        from curation.stages.retrieve.stage import check_config

        if getattr(config, STAGE, None) is None:
            return
        if getattr(config, "retrieve", None) is None:
            raise ConfigError("shard: needs a retrieve section (the datasets to write)")
        check_config(config)  # the as_is image sets are read here too
