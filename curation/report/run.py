"""What the report reads of a run directory: config, step stats, sampled table rows.

Reads stay proportional to what the report shows, not to the pool: counts
come from the stats JSON of each partition; table rows are read column by
column from partitions visited in a seeded random order, stopping as soon as
enough examples are in hand.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import yaml

from curation import config as cfg
from curation import tables
from curation.errors import RunError
from curation.sources import ImageSetConfig
from curation.stages.base import StageContext
from curation.stages.registry import stage_context


class RunView:
    """A finished (or partly finished) run directory, read-only."""

    def __init__(self, run_dir: Path, seed: int = 0):
        self.run_dir = Path(run_dir)
        config_file = self.run_dir / "config.yaml"
        if not config_file.exists():
            raise RunError(f"{self.run_dir}: not a run directory (no config.yaml)")
        self.data = yaml.safe_load(config_file.read_text())
        self.config = cfg.validate(self.data)
        self.stages: list[str] = list(self.config.stages)
        self.rng = np.random.default_rng(seed)

    def ctx(self, stage: str) -> StageContext:
        return stage_context(self.config, stage, self.run_dir)

    def has(self, stage: str) -> bool:
        return stage in self.stages and bool(self.ctx(stage).partitions(stage))

    def section(self, stage: str) -> Any:
        return getattr(self.config, stage, None)

    def image_sets(self) -> dict[str, ImageSetConfig]:
        """Curated and benchmark image sets of the config, by name."""
        sets: dict[str, ImageSetConfig] = {}
        embed, dedup = self.section("embed"), self.section("dedup")
        for s in embed.curated if embed is not None else []:
            sets[s.name] = s
        for s in dedup.relative.benchmarks if dedup is not None else []:
            sets[s.name] = s
        return sets

    def partitions(self, stage: str, shuffled: bool = True) -> list[int]:
        parts = self.ctx(stage).partitions(stage)
        return [parts[i] for i in self.rng.permutation(len(parts))] if shuffled else parts

    def read(
        self, stage: str, partition: int, columns: list[str], where: Callable[[pa.Table], pa.Array] | None = None
    ) -> pa.Table:
        """Some columns of one partition of a stage table (only those it has), filtered by ``where``.

        A filter over columns the partition lacks (a partition where nothing
        reached the stage's own columns) matches no row.
        """
        import pyarrow.parquet as pq

        path = self.ctx(stage).table_path(stage, partition)
        present = set(pq.ParquetFile(path).schema_arrow.names)
        table = tables.read_parquet(path, [c for c in columns if c in present])
        if where is None or not table.num_rows:
            return table
        try:
            return table.filter(where(table))
        except KeyError:  # the filter reads a column this partition lacks
            return table.slice(0, 0)

    def scan(
        self,
        stage: str,
        columns: list[str],
        where=None,
        enough: Callable[[], bool] | None = None,
        max_partitions: int | None = None,
    ) -> Iterator[pa.Table]:
        """Filtered partitions in random order until ``enough()`` or ``max_partitions`` were read."""
        for i, p in enumerate(self.partitions(stage)):
            if (enough is not None and enough()) or (max_partitions is not None and i >= max_partitions):
                return
            yield self.read(stage, p, columns, where)


def sample_rows(table: pa.Table, n: int, rng: np.random.Generator) -> pa.Table:
    """At most ``n`` rows of ``table``, chosen at random, in table order."""
    if table.num_rows <= n:
        return table
    return table.take(np.sort(rng.choice(table.num_rows, size=n, replace=False)))
