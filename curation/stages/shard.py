"""Stage ``shard``: the final LVD-style webdataset shards and their manifest.

Steps:

1. ``write`` (global): lists every output sample (the pool copies the
   ``retrieve`` stage selected, and the images of its ``as_is`` datasets),
   orders them (config order, or a seeded shuffle), and writes
   ``<run_dir>/shards/lvd-NNNNNN.tar`` with ``{key}.jpg`` + ``{key}.json``
   per sample, rolled by sample count and bytes. Each shard is written under
   a temporary name, fsynced and renamed; ``manifest.json`` is written last.
   Its step directory keeps ``placement/part-NNNNNN.parquet`` (where each
   selected pool copy went) and ``samples.parquet`` (every output sample).
2. ``table`` (map, the stage table): one row per pool sample; selected
   samples whose image could not be written get ``not_written``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from curation import tables
from curation.section import Section
from curation.stages import shard_io as io
from curation.stages.base import GlobalStep, MapStep, PartitionOutput, Stage
from curation.stages.registry import register
from curation.stages.retrieve_io import join_status

STAGE = "shard"
NOT_WRITTEN = "not_written"


class ShardConfig(Section):
    max_samples_per_shard: int = Field(10_000, ge=1, description="samples per shard at most")
    max_bytes_per_shard: int = Field(
        1_000_000_000, ge=1, description="bytes per shard at most (a single larger sample gets its own shard)"
    )
    shuffle: bool = Field(True, description="seeded shuffle of all samples (seed: the run's seed)")
    jpeg_quality: int = Field(95, ge=1, le=100, description="quality when a non-JPEG image is re-encoded")
    keep_staging: bool = Field(
        False, description="keep the copies of as_is images staged under the step directory"
    )


class Write(GlobalStep):
    name = "write"

    def run(self, out_dir: Path) -> dict[str, Any]:
        from curation.manifest import write_manifest

        shards_dir = Path(self.ctx.run_dir) / io.SHARDS_DIR
        io.clear_shards(shards_dir)
        staging = out_dir / io.STAGING_DIR
        samples = io.output_samples(self.ctx, staging)
        if self.cfg.shuffle:
            samples = samples.take(np.random.default_rng(self.ctx.seed).permutation(samples.num_rows))
        written = io.write_shards(self.ctx, samples, shards_dir, staging, self.cfg, self.report_progress)
        samples = samples.append_column("shard", written.shard).append_column("error", written.error)
        tables.write_parquet(samples, out_dir / io.SAMPLES_FILE)
        io.write_placement(out_dir, samples, self.ctx.partitions("retrieve"))
        composition = io.composition(samples, [d.name for d in self.ctx.config.retrieve.datasets])
        extra = io.manifest_extra(self.ctx, samples)
        manifest = write_manifest(shards_dir / io.MANIFEST, written.entries, composition,
                                  self.ctx.config.content_hash(), self.ctx.config.name, extra)
        if not self.cfg.keep_staging:
            io.remove_staging(staging)
        return {"shards": len(written.entries), "samples": manifest.num_samples, "bytes": manifest.num_bytes,
                "not_written": extra["not_written"], "composition": composition,
                "sha256": {f"{io.SHARDS_DIR}/{e.path}": e.sha256 for e in written.entries}}

    def outputs(self) -> list[Path]:
        return [Path(self.ctx.run_dir) / io.SHARDS_DIR]


class Table(MapStep):
    """The stage table: where each selected pool sample went."""

    name = "table"

    def open(self, partition: int, out: PartitionOutput) -> None:
        placed = io.read_placement(self.ctx.step_dir(Write.name), partition)
        self.placed = placed.filter(pc.equal(placed.column("copy"), 0))

    def process_batch(self, batch: pa.Table) -> pa.Table:
        return join_status(batch, self.placed, ["dataset", "shard", "shard_key", "copies_written"], STAGE,
                           NOT_WRITTEN, present="shard", reason="not selected by the retrieve stage's search")


@register
class ShardStage(Stage):
    name = STAGE
    config_model = ShardConfig
    inputs = ("retrieve",)
    steps = (Write, Table)
    table_step = "table"

    @classmethod
    def check(cls, config: Any) -> None:
        from curation.errors import ConfigError
        from curation.stages.retrieve import check_config

        if getattr(config, STAGE, None) is None:
            return
        if getattr(config, "retrieve", None) is None:
            raise ConfigError("shard: needs a retrieve section (the datasets to write)")
        check_config(config)  # the as_is image sets are read here too
