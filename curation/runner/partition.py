"""Running one partition of a map step, and one global step: no Ray here.

Both backends (in-process and Ray) call these functions, so that a partition
is processed, checked and committed the same way everywhere:

1. temporaries left by a crashed attempt are deleted;
2. input batches are split into alive and dropped rows; only alive rows go
   to ``process_batch`` (dropped rows pass through unchanged);
3. the output must hold the status columns and, per batch, exactly the
   input's keys in order: nothing is lost or invented;
4. side files and the table are renamed into place, then the stats JSON
   (the completion marker) is written last. The table's Parquet part goes to
   the step directory, everything else to its ``<step>.files/`` sibling
   (``curation.stages.base.part_path``).
"""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa

from curation import tables
from curation.atomic import TMP_MARK, write_json
from curation.errors import PartitionError
from curation.stages.base import (STEP_DONE, GlobalStep, MapStep, PartitionOutput, Timer, files_dir, part_path,
                                  partition_path)


def marker_path(step_dir: Path, partition: int) -> Path:
    return partition_path(step_dir, partition, "stats.json")


def partition_complete(step_dir: Path, partition: int) -> bool:
    """Committed, and every file its stats list is present with its size."""
    from curation.atomic import read_json

    marker = marker_path(step_dir, partition)
    if not marker.exists():
        return False
    try:
        stats = read_json(marker)
    except ValueError:
        return False
    for name, size in stats.get("files", {}).items():
        path = part_path(step_dir, name)
        if not path.exists() or path.stat().st_size != size:
            return False
    return True


def clear_partition(step_dir: Path, partition: int) -> None:
    """Remove whatever an interrupted attempt left of a partition."""
    prefix = tables.partition_name(partition)
    for folder in (step_dir, files_dir(step_dir)):
        for path in folder.glob(f"{prefix}.*"):
            if TMP_MARK in path.name or path.name.endswith(".stats.json"):
                path.unlink(missing_ok=True)


def run_map_partition(step: MapStep, partition: int,
                      on_batch: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Process and commit one partition; return its stats.

    ``on_batch(rows)`` is called after each batch, for progress.
    """
    step_dir = step.ctx.step_dir(step.name)
    step_dir.mkdir(parents=True, exist_ok=True)
    clear_partition(step_dir, partition)
    timer = Timer()
    out = PartitionOutput(step_dir, partition)
    where = f"{step.ctx.stage}/{step.name}/{tables.partition_name(partition)}"
    try:
        step.open(partition, out)
        parts = []
        for batch in step.read(partition):
            parts.append(_process(step, batch, where))
            if on_batch is not None:
                on_batch(batch.num_rows)
        extra = step.close()
        table = _concat(parts)
        tables.write_parquet(table, Path(out.path("parquet")))
        files = out.commit()
    except BaseException:
        out.discard()
        raise
    stats = {
        "stage": step.ctx.stage,
        "step": step.name,
        "partition": partition,
        "rows": table.num_rows,
        "counts": count_statuses(table),
        "files": files,
        **timer.stamp(),
        **extra,
    }
    write_json(marker_path(step_dir, partition), stats)
    return stats


def _process(step: MapStep, batch: pa.Table, where: str) -> pa.Table:
    tables.check_status_columns(batch, f"{where} input")
    if not step.alive_only:
        return _checked(step.process_batch(batch), batch, where)
    mask = tables.alive(batch)
    if mask.all():
        return _checked(step.process_batch(batch), batch, where)
    out = _checked(step.process_batch(batch.filter(mask)), batch.filter(mask), where) if mask.any() else None
    return _merge(out, batch.filter(~mask), mask)


def _checked(out: pa.Table, batch: pa.Table, where: str) -> pa.Table:
    tables.check_status_columns(out, f"{where} output")
    if out.column("key").to_pylist() != batch.column("key").to_pylist():
        raise PartitionError(
            f"{where}: output keys differ from input keys ({out.num_rows} rows out, {batch.num_rows} in)"
        )
    return out


def _merge(alive: pa.Table | None, dropped: pa.Table, mask: np.ndarray) -> pa.Table:
    """Put alive output rows and passed-through dropped rows back in input order."""
    if alive is None:
        return dropped.select(tables.STATUS_COLUMNS)
    keep = [c for c in alive.column_names if c in dropped.column_names]
    dropped = dropped.select(keep)
    dropped = dropped.cast(pa.schema([alive.schema.field(c) for c in keep]))
    merged = pa.concat_tables([alive, dropped], promote_options="default")
    order = np.concatenate([np.flatnonzero(mask), np.flatnonzero(~mask)])
    return merged.take(np.argsort(order, kind="stable"))


def _concat(parts: list[pa.Table]) -> pa.Table:
    if not parts:
        return tables.status_table([], [])
    return pa.concat_tables(parts, promote_options="default")


def count_statuses(table: pa.Table) -> dict[str, int]:
    counts = collections.Counter(table.column("status").to_pylist())
    return dict(sorted(counts.items()))


def run_global_step(step: GlobalStep) -> dict[str, Any]:
    """Run a global step and commit it with ``_SUCCESS.json``."""
    step_dir = step.ctx.step_dir(step.name)
    done = step_dir / STEP_DONE
    done.unlink(missing_ok=True)
    step_dir.mkdir(parents=True, exist_ok=True)
    from curation.atomic import remove_temporaries

    remove_temporaries(step_dir)
    timer = Timer()
    extra = step.run(step_dir) or {}
    stats = {"stage": step.ctx.stage, "step": step.name, **timer.stamp(), **extra}
    write_json(done, stats)
    return stats

