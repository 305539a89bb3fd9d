"""Running one partition of a map step, and one global step: no Ray here.

Both backends (in-process and Ray) call these functions, so that a partition
is processed, checked and committed the same way everywhere:

1. temporaries left by a crashed attempt are deleted;
2. input batches are split into alive and dropped rows; only alive rows go
   to ``process_batch`` (dropped rows pass through unchanged);
3. the output must hold the status columns and, per batch, exactly the
   input's keys in order: nothing is lost or invented;
4. side files and the table are renamed into place, then the stats JSON
   (the completion marker, listing every file with its size and sha256) is
   written last. The table's Parquet part goes to the step directory,
   everything else to its ``<step>.files/`` sibling
   (``curation.stages.base.part_path``).
   Files a step wrote outside its step directory (final shards) are listed
   too, under ``outputs`` and ``outputs_sha256`` (relative to the run
   directory), from what its ``close()`` returns.

A global step is committed the same way: its ``_SUCCESS.json``, written
last, lists every file under its step directory and under its
:meth:`~curation.stages.base.GlobalStep.outputs`, relative to the run
directory (see :mod:`curation.markers` and :mod:`curation.runner.verify`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation import tables
from curation.atomic import TMP_MARK, write_json
from curation.errors import PartitionError
from curation.layout import PROGRESS_FILE, STEP_DONE, files_dir, part_path
from curation.markers import in_step, marker_path, marker_problems, outputs_of, sha256_file
from curation.runner.resources import usage
from curation.stages.base import GlobalStep, MapStep, PartitionOutput, Timer


def partition_complete(step_dir: Path, partition: int) -> bool:
    """Committed, and every file its stats list is present with its size."""
    marker = marker_path(step_dir, partition)
    return marker.exists() and not marker_problems(marker, in_step(step_dir), outputs=outputs_of(step_dir))


def clear_partition(step_dir: Path, partition: int) -> None:
    """Remove whatever an interrupted attempt left of a partition."""
    prefix = tables.partition_name(partition)
    for folder in (step_dir, files_dir(step_dir)):
        for path in folder.glob(f"{prefix}.*"):
            if TMP_MARK in path.name or path.name.endswith(".stats.json"):
                path.unlink(missing_ok=True)


def run_map_partition(
    step: MapStep,
    partition: int,
    on_batch: Callable[[int], None] | None = None,
    on_metrics: Callable[[list[tuple[str, float, dict[str, str]]]], None] | None = None,
) -> dict[str, Any]:
    """Process and commit one partition; return its stats.

    ``on_batch(rows)`` is called after each batch, for progress, and
    ``on_metrics(values)`` with what the step's :meth:`~MapStep.batch_metrics` reports.
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
        for batch in read_ahead(step, step.read(partition)):
            parts.append(_process(step, batch, where))
            if on_batch is not None:
                on_batch(batch.num_rows)
            if on_metrics is not None and step.metrics:
                on_metrics(step.batch_metrics())
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
        "sha256": {name: sha256_file(part_path(step_dir, name)) for name in files},
        **timer.stamp(),
        **extra,
        **usage(step.grant),
    }
    write_json(marker_path(step_dir, partition), stats)
    return stats


def read_ahead(step: MapStep, batches: Iterator[pa.Table]) -> Iterator[pa.Table]:
    """Each input batch, yielded once :meth:`MapStep.prefetch` has been called on the next one.

    A step without a ``prefetch`` reads one batch at a time, as before.
    """
    if type(step).prefetch is MapStep.prefetch:
        yield from batches
        return
    previous = None
    for batch in batches:
        rows = _given(step, batch)
        if rows.num_rows:
            step.prefetch(rows)
        if previous is not None:
            yield previous
        previous = batch
    if previous is not None:
        yield previous


def _given(step: MapStep, batch: pa.Table) -> pa.Table:
    """The rows of ``batch`` that ``process_batch`` gets."""
    if not step.alive_only:
        return batch
    mask = tables.alive(batch)
    return batch if mask.all() else batch.filter(mask)


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
    if not tables.same_keys(out, batch):
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
    counts = pc.value_counts(table.column("status")).to_pylist()
    return dict(sorted((c["values"], c["counts"]) for c in counts))


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
    known = extra.pop("sha256", {})  # checksums the step computed as it wrote
    run_dir = Path(step.ctx.run_dir)
    files = {str(p.relative_to(run_dir)): p.stat().st_size for p in _written(step_dir, step.outputs())}
    sums = {name: known.get(name) or sha256_file(run_dir / name) for name in files}
    stats = {
        "stage": step.ctx.stage,
        "step": step.name,
        **timer.stamp(),
        **extra,
        "files": files,
        "sha256": sums,
        **usage(step.grant),
    }
    write_json(done, stats)
    return stats


def _written(step_dir: Path, outputs: list[Path]) -> list[Path]:
    """Every committed file of a global step, in a stable order (no marker, no temporaries, no progress file)."""
    found = []
    for root in [step_dir, *outputs]:
        if root.is_file():
            found.append(root)
        elif root.is_dir():
            found += sorted(p for p in root.rglob("*") if p.is_file())
    return [p for p in found if p.name not in (STEP_DONE, PROGRESS_FILE) and TMP_MARK not in p.name]
