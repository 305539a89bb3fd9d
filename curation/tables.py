"""Stage tables: one Parquet file per partition, one row per sample.

Every stage table starts with the same status columns:

- ``key`` (string): the sample key, deterministic and stable across reruns.
- ``status`` (string): the sample's terminal status in this stage.
  ``success`` means the sample is alive after this stage; anything else
  (``failed_download:http_404``, ``duplicate_copy``, ...) says why it is not.
- ``dropped_by`` (string, null while alive): the stage that dropped it.
- ``error`` (string, null): a human-readable detail of the failure.

A stage receives every row of its input table, alive or not, and passes the
rows that are already dropped through unchanged. So every sample of the pool
has exactly one row, and one terminal status, in every stage's table.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation.atomic import atomic_path

SUCCESS = "success"
STATUS_FIELDS = [
    pa.field("key", pa.string(), nullable=False),
    pa.field("status", pa.string(), nullable=False),
    pa.field("dropped_by", pa.string()),
    pa.field("error", pa.string()),
]
STATUS_COLUMNS = [f.name for f in STATUS_FIELDS]


def sample_key(partition: int, index: int) -> str:
    """Key of the ``index``-th input row of a partition: sortable, fixed width."""
    return f"{partition:06d}{index:06d}"


def key_partition(key: str) -> int:
    """The partition of a pool sample key made by :func:`sample_key`."""
    return int(key[:-6])


def partition_name(partition: int) -> str:
    return f"part-{partition:06d}"


def alive(table: pa.Table) -> np.ndarray:
    """Boolean mask of the rows still alive (status ``success``)."""
    equal = pc.fill_null(pc.equal(table.column("status"), SUCCESS), False)
    return np.asarray(equal.to_numpy(zero_copy_only=False), dtype=bool)


def status_table(keys, status, dropped_by=None, error=None) -> pa.Table:
    n = len(keys)
    return pa.table(
        {
            "key": pa.array(keys, pa.string()),
            "status": pa.array(status, pa.string()),
            "dropped_by": pa.array(dropped_by if dropped_by is not None else [None] * n, pa.string()),
            "error": pa.array(error if error is not None else [None] * n, pa.string()),
        },
        schema=pa.schema(STATUS_FIELDS),
    )


def drop(table: pa.Table, mask: np.ndarray, stage: str, statuses, errors=None) -> pa.Table:
    """Mark the rows of ``mask`` as dropped by ``stage`` with their statuses.

    ``statuses`` and ``errors`` are per-row sequences (or one value for all);
    rows outside the mask keep their columns.
    """
    n = table.num_rows
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != (n,):
        raise ValueError(f"drop: a mask of {mask.shape} for {n} rows")
    chosen = pa.array(mask, pa.bool_())
    values = {"status": statuses, "dropped_by": stage}
    if errors is not None:
        values["error"] = errors
    for name, new in values.items():
        idx = table.schema.get_field_index(name)
        old = table.column(idx).combine_chunks().cast(pa.string())
        column = pc.if_else(chosen, _per_row(new, n), old)
        table = table.set_column(idx, table.schema.field(name), column)
    return table


def _per_row(values, n: int) -> pa.Scalar | pa.Array:
    """One string for every row, or a string per row."""
    if isinstance(values, str) or values is None:
        return pa.scalar(values, pa.string())
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    array = values.cast(pa.string()) if isinstance(values, pa.Array) else pa.array(list(values), pa.string())
    if len(array) != n:
        raise ValueError(f"drop: {len(array)} values for {n} rows")
    return array


def same_keys(a: pa.Table, b: pa.Table) -> bool:
    """Whether two tables hold the same ``key`` column, row for row (nulls equal only to nulls)."""
    if a.num_rows != b.num_rows:
        return False
    x, y = a.column("key"), b.column("key")
    equal = pc.coalesce(pc.equal(x, y), pc.and_(pc.is_null(x), pc.is_null(y)))
    return pc.all(equal, min_count=0).as_py()


def check_status_columns(table: pa.Table, where: str) -> None:
    """Reject a table that lacks the status columns or has a row without status."""
    from curation.errors import PartitionError

    missing = [c for c in STATUS_COLUMNS if c not in table.column_names]
    if missing:
        raise PartitionError(f"{where}: table lacks status columns {missing}")
    if table.column("status").null_count or table.column("key").null_count:
        raise PartitionError(f"{where}: rows without key or status")


def write_parquet(table: pa.Table, path: Path) -> None:
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def read_parquet(path: Path, columns: list[str] | None = None) -> pa.Table:
    return pq.read_table(path, columns=columns)


def iter_batches(path: Path, batch_size: int, columns: list[str] | None = None) -> Iterator[pa.Table]:
    parquet = pq.ParquetFile(path)
    for batch in parquet.iter_batches(batch_size=batch_size, columns=columns):
        yield pa.Table.from_batches([batch])
