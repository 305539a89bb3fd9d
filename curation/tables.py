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
    return np.asarray(table.column("status").to_numpy(zero_copy_only=False) == SUCCESS)


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
    status = np.asarray(table.column("status").to_pylist(), dtype=object)
    dropped = np.asarray(table.column("dropped_by").to_pylist(), dtype=object)
    error = np.asarray(table.column("error").to_pylist(), dtype=object)
    status[mask] = _broadcast(statuses, n)[mask]
    dropped[mask] = stage
    if errors is not None:
        error[mask] = _broadcast(errors, n)[mask]
    for name, values in (("status", status), ("dropped_by", dropped), ("error", error)):
        idx = table.schema.get_field_index(name)
        table = table.set_column(idx, table.schema.field(name), pa.array(values.tolist(), pa.string()))
    return table


def _broadcast(values, n: int) -> np.ndarray:
    if isinstance(values, str) or values is None:
        return np.full(n, values, dtype=object)
    return np.asarray(list(values), dtype=object)


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
