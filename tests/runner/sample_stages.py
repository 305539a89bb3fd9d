"""Small real stages used to test the runner (registered as a plugin).

``numbers`` makes rows from nothing (like a source stage); ``parity`` drops
odd rows and totals the rest in a global step. Both can be told to fail or
slow down, so that retries and crashes can be exercised.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
from pydantic import Field

from curation import tables
from curation.atomic import write_json
from curation.errors import ConfigError
from curation.section import Section
from curation.stages.base import GlobalStep, MapStep, Metric, Stage
from curation.stages.registry import register


def die_once(directory: str | None, unit: str) -> None:
    """With a directory: the worker process exits (as a kill would) on the unit's first attempt, leaving a marker."""
    if not directory:
        return
    marker = Path(directory) / f"died-{unit}"
    if not marker.exists():
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
        os._exit(1)


class NumbersConfig(Section):
    partitions: int = Field(4, ge=1, description="partitions to make")
    rows: int = Field(10, ge=0, description="rows per partition")
    sleep_s: float = Field(0.0, ge=0, description="pause per partition")
    fail_partitions: list[int] = Field(default_factory=list, description="partitions that always fail")
    fail_once_dir: str | None = Field(None, description="partitions fail once, leaving a marker here")
    die_once_dir: str | None = Field(
        None, description="the worker process exits on a partition's first attempt, leaving a marker here"
    )
    allocate_mb: int = Field(0, ge=0, description="memory each partition allocates and holds while it runs")
    input_file: str | None = Field(None, description="a file that must exist (a config check to fail)")
    fail_setup: bool = Field(False, description="setup() raises: no worker can start")


class MakeNumbers(MapStep[NumbersConfig]):
    name = "make"
    metrics = (Metric("curation_numbers_rows", "Rows made."),)  # reported as data, exported by the runner

    def partitions(self) -> list[int]:
        return list(range(self.cfg.partitions))

    def num_rows(self, partition: int) -> int:
        return self.cfg.rows

    def batch_size(self) -> int:
        return 4

    def read(self, partition: int):
        if partition in self.cfg.fail_partitions:
            raise RuntimeError(f"partition {partition} is configured to fail")
        die_once(self.cfg.die_once_dir, f"partition-{partition}")
        held = np.ones(self.cfg.allocate_mb * 2**20, np.uint8)  # touched pages: resident memory
        time.sleep(self.cfg.sleep_s)
        keys = [tables.sample_key(partition, i) for i in range(self.cfg.rows)]
        status = tables.status_table(keys, [tables.SUCCESS] * len(keys))
        values = pa.array(np.arange(self.cfg.rows, dtype=np.int64) + 100 * partition)
        table = status.append_column("value", values)
        for start in range(0, table.num_rows, self.batch_size()):
            yield table.slice(start, self.batch_size())
            self._fail_once(partition)
        del held

    def _fail_once(self, partition: int) -> None:
        """With ``fail_once_dir``: fail after the first batch of a partition's first attempt."""
        if not self.cfg.fail_once_dir:
            return
        marker = Path(self.cfg.fail_once_dir) / f"failed-{partition}"
        if not marker.exists():
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
            raise RuntimeError(f"partition {partition} fails on its first attempt")

    def setup(self) -> None:
        if self.cfg.fail_setup:
            raise RuntimeError("numbers cannot set up")

    def open(self, partition, out):
        self.side = out.path("txt")
        self.made = 0

    def process_batch(self, batch: pa.Table) -> pa.Table:
        with open(self.side, "a") as f:
            f.write("".join(f"{k}\n" for k in batch.column("key").to_pylist()))
        self.made += batch.num_rows
        return batch

    def batch_metrics(self) -> list[tuple[str, float, dict[str, str]]]:
        made, self.made = self.made, 0
        return [("curation_numbers_rows", made, {})]


@register
class NumbersStage(Stage):
    name = "numbers"
    config_model = NumbersConfig
    steps = (MakeNumbers,)
    table_step = "make"

    @classmethod
    def check(cls, config) -> None:
        path = config.numbers.input_file
        if path is not None and not Path(path).exists():
            raise ConfigError(f"numbers.input_file: '{path}' does not exist")


class ParityConfig(Section):
    drop_odd: bool = Field(True, description="drop odd values")
    die_once_dir: str | None = Field(
        None, description="the total's worker process exits on its first attempt, leaving a marker here"
    )


class MarkParity(MapStep[ParityConfig]):
    name = "mark"

    def process_batch(self, batch: pa.Table) -> pa.Table:
        values = batch.column("value").to_numpy()
        odd = values % 2 == 1 if self.cfg.drop_odd else np.zeros(len(values), bool)
        out = tables.drop(batch, odd, "parity", "odd", [f"value {v} is odd" for v in values])
        return out.append_column("half", pa.array(values // 2))


class Total(GlobalStep[ParityConfig]):
    name = "total"

    def run(self, out_dir: Path) -> dict:
        die_once(self.cfg.die_once_dir, "total")
        table = self.ctx.read_table("parity")
        self.report_progress(1, 2)  # a global step reports progress in its own units
        kept = table.filter(pa.array(tables.alive(table)))
        total = int(np.sum(kept.column("value").to_numpy())) if kept.num_rows else 0
        write_json(out_dir / "total.json", {"total": total})
        self.report_progress(2, 2)
        return {"total": total}


@register
class ParityStage(Stage):
    name = "parity"
    config_model = ParityConfig
    inputs = ("numbers",)
    steps = (MarkParity, Total)
    table_step = "mark"
