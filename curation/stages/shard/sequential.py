"""The single-process shard writer: the reference the distributed steps are tested and benchmarked against.

One loop over every output sample in order, reading each image by key
through an index of its source tar that is kept for the whole run (about
364 bytes per stored image of every tar touched), rolling shards by count
and bytes as it writes. The shard stage does not run it: its ``locate``,
``plan``, ``write`` and ``manifest`` steps produce the same shards and
manifest with bounded memory per worker (:mod:`curation.stages.shard.write`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from curation.stages.shard import io as io


@dataclass
class Written:
    entries: list  # ShardEntry, in order
    shard: pa.Array  # (samples,) shard file name, null when not written
    error: pa.Array  # (samples,) why not written, null when written


class _Images:
    """Image bytes by (source, key): pool download tars and staged as_is tars, every index kept."""

    def __init__(self, ctx: Any, staging: Path):
        self.ctx, self.staging = ctx, staging
        self._tars: dict[tuple[str, int | None], Any] = {}  # pool tars and staged TarImages

    def _tar(self, source: str, partition: int | None):
        from curation.imagestore import TarImages, pool_images

        ref = (source, partition)
        if ref not in self._tars:
            if source == "pool":
                assert partition is not None  # pool images are per partition
                self._tars[ref] = pool_images(self.ctx.run_dir, partition)
            else:
                self._tars[ref] = TarImages(self.staging / f"{source}.tar")
        return self._tars[ref]

    def get(self, sample: dict) -> tuple[bytes, dict]:
        is_pool = sample["source"] == "pool"
        tar = self._tar("pool" if is_pool else sample["dataset"], sample["partition"] if is_pool else None)
        if sample["source_key"] not in tar:
            raise LookupError(f"image {sample['source_key']} is missing from {tar.path}")
        return tar.get(sample["source_key"]), tar.meta(sample["source_key"]) if is_pool else {}


def write_shards(ctx: Any, samples: pa.Table, shards_dir: Path, staging: Path, cfg: Any) -> Written:
    """Write every sample that has an image, in order; roll by count and bytes."""
    from curation.algorithms.shard_plan import member_bytes
    from curation.download.shardwriter import ShardWriter
    from curation.manifest import shard_entry

    images = _Images(ctx, staging)
    dedup = io.DedupDecisions(ctx)
    shard_of: list[str | None] = [None] * samples.num_rows
    errors: list[str | None] = samples.column("stage_error").to_pylist()
    entries: list[Any] = []  # ShardEntry
    current: io.OpenShard | None = None
    size, i = 0, -1
    for batch in samples.to_batches(max_chunksize=4096):
        for sample in batch.to_pylist():
            i += 1
            if errors[i]:
                continue
            try:
                data, pool_meta = images.get(sample)
                data = io.as_jpeg(data, cfg.jpeg_quality)
            except Exception as err:  # sample tier: the sample is left out with its reason
                errors[i] = f"{type(err).__name__}: {err}"
                continue
            blob = io.sample_json(sample, pool_meta, dedup.get(sample))
            sample_size = int(member_bytes(len(data)) + member_bytes(len(blob)))
            if current and (
                current.samples >= cfg.max_samples_per_shard or size + sample_size > cfg.max_bytes_per_shard
            ):
                entries.append(current.close(shard_entry))
                current = None
            if current is None:
                current, size = io.OpenShard(shards_dir / f"{io.SHARD_PREFIX}{len(entries):06d}.tar", ShardWriter), 0
            current.writer.add(f"{sample['key']}.jpg", data)
            current.writer.add(f"{sample['key']}.json", blob)
            current.samples += 1
            size += sample_size
            shard_of[i] = current.final.name
    if current:
        entries.append(current.close(shard_entry))
    io.fsync(shards_dir)
    return Written(entries, pa.array(shard_of, pa.string()), pa.array(errors, pa.string()))


def write_sequential(ctx: Any, shards_dir: Path, staging: Path):
    """Shards and manifest of a run, written by the one loop; returns the manifest."""
    from curation.manifest import write_manifest

    cfg = ctx.stage_config
    io.clear_shards(shards_dir)
    samples = io.output_samples(ctx, staging)
    if cfg.shuffle:
        samples = samples.take(np.random.default_rng(ctx.seed).permutation(samples.num_rows))
    written = write_shards(ctx, samples, shards_dir, staging, cfg)
    samples = samples.append_column("shard", written.shard).append_column("error", written.error)
    composition = io.composition(samples, [d.name for d in ctx.config.retrieve.datasets])
    return write_manifest(
        shards_dir / io.MANIFEST,
        written.entries,
        composition,
        ctx.config.content_hash(),
        ctx.config.name,
        io.manifest_extra(ctx, samples),
    )
