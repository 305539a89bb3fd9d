"""The curated query sets of ``embed.curated``, embedded as a map step.

- ``curated_parts`` (map): every set is cut into partitions of
  ``embed.curated_partition_size`` images (a URL list, whose size is only
  known once fetched, is one partition), numbered across the sets in config
  order, and embedded on the same actor pool shape as the pool (one actor
  per GPU): ``curated_parts/part-NNNNNN.{parquet,npy}``.
- ``curated`` (global): each set's partitions are concatenated, streaming,
  into ``curated/<name>.{parquet,npy}``: the layout of
  :mod:`curation.stages.embed.arrays`, the same files a single task wrote before.
  It holds one partition's embeddings and the set's table at a time.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path
from typing import Any

import pyarrow as pa

from curation import tables
from curation.atomic import atomic_path, read_json
from curation.sources import ImageSetConfig, count_images, iter_images
from curation.stages.base import (
    GlobalStep,
    MapStep,
    Resources,
    device_gpus,
    partition_path,
)
from curation.stages.embed import arrays as embeddings
from curation.stages.embed.config import EmbedConfig
from curation.stages.embed.model import EmbeddingModel, chunks, curated_table

PARTS_STEP = "curated_parts"


def curated_layout(cfg: Any) -> list[tuple[ImageSetConfig, int, int | None]]:
    """``(image set, start, stop)`` of every curated partition, in partition order."""
    out: list[tuple[ImageSetConfig, int, int | None]] = []
    size = cfg.curated_partition_size
    for image_set in cfg.curated:
        n = count_images(image_set)
        if n is None:
            out.append((image_set, 0, None))
            continue
        out += [(image_set, start, min(start + size, n)) for start in range(0, max(n, 1), size)]
    return out


class CuratedParts(MapStep[EmbedConfig]):
    name = PARTS_STEP
    alive_only = False
    pool_partitions = False

    @cached_property
    def layout(self) -> list[tuple[ImageSetConfig, int, int | None]]:
        return curated_layout(self.cfg)

    def resources(self) -> Resources:
        return Resources(num_cpus=self.cfg.num_cpus, num_gpus=device_gpus(self.cfg.device))

    def batch_size(self) -> int:
        return self.cfg.batch_size

    def partitions(self) -> list[int]:
        return list(range(len(self.layout)))

    def num_rows(self, partition: int) -> int:
        _, start, stop = self.layout[partition]
        return 0 if stop is None else stop - start

    def setup(self) -> None:
        self.embedder = EmbeddingModel(self.cfg, self.grant.num_gpus)

    def open(self, partition: int, out) -> None:
        self.writer = embeddings.NpyAppender(out.path("npy"), self.embedder.dim, self.cfg.storage_dtype)
        self.pending: collections.deque = collections.deque()
        self.image_set = self.layout[partition][0]

    def read(self, partition: int) -> Iterator[pa.Table]:
        """Batches of keys; each is yielded once the next one's decoding has started."""
        image_set, start, stop = self.layout[partition]
        previous = None
        for chunk in chunks(iter_images(image_set, start, stop), self.cfg.batch_size):
            self.pending.append((chunk, self.embedder.submit([blob for _, blob, _ in chunk])))
            if previous is not None:
                yield previous
            previous = tables.status_table([k for k, _, _ in chunk], [tables.SUCCESS] * len(chunk))
        if previous is not None:
            yield previous

    def process_batch(self, batch: pa.Table) -> pa.Table:
        chunk, job = self.pending.popleft()
        decoded = job.result()
        out = curated_table(chunk, decoded, self.writer.rows)
        if decoded.ok.any():
            self.writer.append(self.embedder.forward(decoded.pixels[decoded.ok]))
        return out

    def close(self) -> dict[str, Any]:
        embedded = self.writer.close()
        return {"dataset": self.image_set.name, "embedded": embedded, "model": self.embedder.info}


class EmbedCurated(GlobalStep[EmbedConfig]):
    """Each curated set's partitions joined into ``<name>.parquet`` + ``<name>.npy``."""

    name = embeddings.CURATED_STEP

    def run(self, out_dir: Path) -> dict[str, Any]:
        parts_dir = self.ctx.step_dir(PARTS_STEP)
        by_set: dict[str, list[int]] = collections.defaultdict(list)
        for p, (image_set, _, _) in enumerate(curated_layout(self.cfg)):
            by_set[image_set.name].append(p)
        done, model = {}, None
        for name, partitions in by_set.items():
            done[name] = self._join(name, partitions, parts_dir, out_dir)
            model = read_json(partition_path(parts_dir, partitions[0], "stats.json")).get("model")
        return {"datasets": done, **({"model": model} if model else {})}

    def _join(self, name: str, partitions: list[int], parts_dir: Path, out_dir: Path) -> dict[str, int]:
        table_path = out_dir / f"{name}.parquet"
        if table_path.exists():  # a resumed step keeps the sets it finished
            return embeddings.curated_counts(table_path)
        parts = []
        with atomic_path(out_dir / f"{name}.npy") as tmp:
            writer = None
            for p in partitions:
                x = embeddings._load(partition_path(parts_dir, p, "npy"))
                writer = writer or embeddings.NpyAppender(tmp, x.shape[1], str(x.dtype))
                table = tables.read_parquet(partition_path(parts_dir, p, "parquet"))
                if table.num_rows == 0:
                    continue
                rows = table.column(embeddings.ROW_COLUMN).to_numpy()
                shifted = pa.array(rows + (rows >= 0) * writer.rows, pa.int64())
                parts.append(
                    table.set_column(
                        table.schema.get_field_index(embeddings.ROW_COLUMN), embeddings.ROW_COLUMN, shifted
                    )
                )
                writer.append(x)
            assert writer is not None  # a set has at least one partition
            writer.close()
        table = pa.concat_tables(parts) if parts else curated_table([], None, 0)
        tables.write_parquet(table, table_path)  # written last: marks the set done
        return embeddings.curated_counts(table_path)
