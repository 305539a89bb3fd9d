"""Embedding files of a run: the contract between ``embed`` and its readers.

Layout written by the ``embed`` stage (``part-NNNNNN`` = partition id)::

    <run_dir>/stages/embed/pool/part-NNNNNN.parquet   status columns + embedding_row (int64)
    <run_dir>/stages/embed/pool.files/part-NNNNNN.npy (m, d) float16|float32, L2-normalised
    <run_dir>/stages/embed/curated/<dataset>.parquet  key, path, label, meta (JSON), status columns, embedding_row
    <run_dir>/stages/embed/curated/<dataset>.npy      (m, d) float16|float32, L2-normalised

Row ``j`` of a ``.npy`` is the embedding of the table row whose
``embedding_row`` is ``j``; rows that were not embedded (dropped before
``embed``, or that failed to decode) have ``embedding_row == -1``. The
``.npy`` rows follow table order.

Reading API (stable; used by ``cluster`` and ``retrieve``):

- :func:`load_pool_embeddings` -> ``(keys, X, partitions, rows)``: every
  embedded pool sample in global order (partitions ascending, then rows).
- :func:`partition_embeddings` -> ``(keys, X, rows)`` of one partition,
  memory-mapped (the per-partition unit of work of map steps).
- :func:`pool_counts`, :func:`take_pool_rows`: sizes from the ``.npy``
  headers and a gather of given global indices, for sampling without loading
  the pool.
- :func:`load_curated_embeddings` -> ``(keys, X, meta_table)``;
  :func:`curated_datasets` lists the embedded datasets.

``X`` is float32 ``(n, d)``; it is a read-only memory map when the file is
float32 and no concatenation is needed, otherwise an in-memory copy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curation.atomic import atomic_path
from curation.layout import committed_partitions, partition_path, step_dir

STAGE = "embed"
POOL_STEP = "pool"
CURATED_STEP = "curated"
ROW_COLUMN = "embedding_row"
STORAGE_DTYPES = ("float16", "float32")


def _run_dir(ctx_or_run_dir: Any) -> Path:
    return Path(getattr(ctx_or_run_dir, "run_dir", ctx_or_run_dir))


def pool_dir(ctx_or_run_dir: Any) -> Path:
    return step_dir(_run_dir(ctx_or_run_dir), STAGE, POOL_STEP)


def curated_dir(ctx_or_run_dir: Any) -> Path:
    return step_dir(_run_dir(ctx_or_run_dir), STAGE, CURATED_STEP)


def save_array(path: Path, array: np.ndarray, dtype: str = "float32") -> None:
    """Write ``array`` as a ``.npy`` at exactly ``path`` (np.save would append a suffix)."""
    with open(path, "wb") as f:
        np.save(f, np.ascontiguousarray(array, dtype=dtype), allow_pickle=False)


class NpyAppender:
    """Writes a 2-D ``.npy`` row block by row block, without holding it in memory.

    The header is reserved for the largest shape first and rewritten with
    the real row count on :meth:`close` (padded with spaces, which the
    ``.npy`` format allows), so the result is a plain ``.npy`` file.
    """

    def __init__(self, path: Path, dim: int, dtype: str = "float32"):
        self.path = Path(path)
        self.dim = dim
        self.dtype = np.dtype(dtype)
        self.rows = 0
        self._reserved = len(_npy_header((10**15, dim), self.dtype))
        self._file = open(self.path, "wb")
        self._file.write(b"\0" * self._reserved)

    def append(self, block: np.ndarray) -> None:
        block = np.ascontiguousarray(block, dtype=self.dtype).reshape(-1, self.dim)
        self._file.write(block.tobytes())
        self.rows += block.shape[0]

    def close(self) -> int:
        """Finish the file; returns the number of rows."""
        self._file.seek(0)
        self._file.write(_npy_header((self.rows, self.dim), self.dtype, self._reserved))
        self._file.close()
        return self.rows

    def abort(self) -> None:
        self._file.close()
        self.path.unlink(missing_ok=True)


def _npy_header(shape: tuple[int, int], dtype: np.dtype, total: int | None = None) -> bytes:
    """A version 1.0 ``.npy`` header of ``total`` bytes (default: the smallest multiple of 64)."""
    text = f"{{'descr': {dtype.str!r}, 'fortran_order': False, 'shape': {tuple(shape)!r}, }}"
    prefix = 10  # magic (6) + version (2) + header length (2)
    total = total or -(-(prefix + len(text) + 1) // 64) * 64
    text += " " * (total - prefix - len(text) - 1) + "\n"
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text.encode("latin1")


def save_array_atomic(path: Path, array: np.ndarray, dtype: str = "float32") -> None:
    with atomic_path(path) as tmp:
        save_array(tmp, array, dtype)


def _load(path: Path) -> np.ndarray:
    return np.load(path, mmap_mode="r", allow_pickle=False)


def _as_float32(x: np.ndarray) -> np.ndarray:
    return x if x.dtype == np.float32 else np.asarray(x, dtype=np.float32)


def pool_partitions(ctx_or_run_dir: Any) -> list[int]:
    """Committed partitions of the pool embeddings, ascending."""
    return committed_partitions(pool_dir(ctx_or_run_dir))


def _partition_path(ctx_or_run_dir: Any, partition: int, suffix: str) -> Path:
    return partition_path(pool_dir(ctx_or_run_dir), partition, suffix)


def embedded_rows(table: pa.Table) -> np.ndarray:
    """Table row of each ``.npy`` row: ``(m,)`` int64, in ``.npy`` order."""
    emb = table.column(ROW_COLUMN).to_numpy(zero_copy_only=False)
    rows = np.flatnonzero(emb >= 0)
    return rows[np.argsort(emb[rows], kind="stable")].astype(np.int64)


def partition_embeddings(ctx_or_run_dir: Any, partition: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(keys (m,) str, X (m, d) as stored, memory-mapped, rows (m,) int64)`` of one partition.

    ``X`` keeps the storage dtype (float16 or float32); ``rows[j]`` is the
    row of the partition's table that ``X[j]`` embeds.
    """
    table = pq.read_table(_partition_path(ctx_or_run_dir, partition, "parquet"), columns=["key", ROW_COLUMN])
    rows = embedded_rows(table)
    keys = np.asarray(table.column("key").to_numpy(zero_copy_only=False), dtype=str)[rows]
    x = _load(_partition_path(ctx_or_run_dir, partition, "npy"))
    return keys, x, rows


def pool_counts(ctx_or_run_dir: Any) -> dict[int, int]:
    """Embedded samples per partition, read from the ``.npy`` headers only."""
    return {p: _load(_partition_path(ctx_or_run_dir, p, "npy")).shape[0] for p in pool_partitions(ctx_or_run_dir)}


def pool_dim(ctx_or_run_dir: Any) -> int:
    parts = pool_partitions(ctx_or_run_dir)
    if not parts:
        raise FileNotFoundError(f"no pool embeddings under {pool_dir(ctx_or_run_dir)}")
    return int(_load(_partition_path(ctx_or_run_dir, parts[0], "npy")).shape[1])


def load_pool_embeddings(
    ctx_or_run_dir: Any, partitions: list[int] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every embedded pool sample: ``(keys, X, partitions, rows)``.

    - ``keys``: ``(n,)`` str, sample keys;
    - ``X``: ``(n, d)`` float32, L2-normalised embeddings;
    - ``partitions``: ``(n,)`` int64, the partition of each sample;
    - ``rows``: ``(n,)`` int64, its row in that partition's table (of
      ``embed`` and of every later stage, which keep row order).

    Order: partitions ascending, then ``.npy`` order. ``partitions`` limits
    the read to those partitions.
    """
    parts = pool_partitions(ctx_or_run_dir) if partitions is None else list(partitions)
    keys, xs, part_ids, rows = [], [], [], []
    for p in parts:
        k, x, r = partition_embeddings(ctx_or_run_dir, p)
        keys.append(k)
        xs.append(x)
        rows.append(r)
        part_ids.append(np.full(len(r), p, dtype=np.int64))
    if not parts:
        return np.array([], dtype=str), np.zeros((0, 0), np.float32), np.array([], np.int64), np.array([], np.int64)
    x = _as_float32(xs[0]) if len(xs) == 1 else np.concatenate([_as_float32(x) for x in xs])
    return np.concatenate(keys), x, np.concatenate(part_ids), np.concatenate(rows)


def take_pool_rows(ctx_or_run_dir: Any, indices: np.ndarray) -> np.ndarray:
    """Embeddings at sorted global ``indices`` (order of :func:`load_pool_embeddings`): ``(len, d)`` float32.

    Reads only those rows from the memory maps, so a training sample of a
    large pool never loads the whole pool.
    """
    indices = np.asarray(indices, dtype=np.int64)
    counts = pool_counts(ctx_or_run_dir)
    out = np.empty((len(indices), pool_dim(ctx_or_run_dir)), dtype=np.float32)
    start = 0
    for p, count in counts.items():
        lo, hi = np.searchsorted(indices, [start, start + count])
        if hi > lo:
            x = _load(_partition_path(ctx_or_run_dir, p, "npy"))
            out[lo:hi] = x[indices[lo:hi] - start]
        start += count
    return out


def curated_datasets(ctx_or_run_dir: Any) -> list[str]:
    """Names of the embedded curated datasets (those whose table is written)."""
    root = curated_dir(ctx_or_run_dir)
    return sorted(p.stem for p in root.glob("*.parquet")) if root.exists() else []


def curated_counts(table_path: Path) -> dict[str, int]:
    """Images, embedded images and decode failures of a curated dataset's table."""
    table = pq.read_table(table_path, columns=[ROW_COLUMN])
    embedded = int((table.column(ROW_COLUMN).to_numpy(zero_copy_only=False) >= 0).sum())
    return {"images": table.num_rows, "embedded": embedded, "failed_decode": table.num_rows - embedded}


def load_curated_embeddings(ctx_or_run_dir: Any, dataset: str) -> tuple[np.ndarray, np.ndarray, pa.Table]:
    """``(keys (m,) str, X (m, d) float32, meta_table)`` of one curated dataset.

    ``meta_table`` has one row per embedding, in ``X`` order: ``key``,
    ``path`` (source file, tar member or URL), ``label`` (class folder, or
    null), ``meta`` (JSON string). Images that failed to decode are absent
    (they remain in the ``.parquet`` with their status).
    """
    root = curated_dir(ctx_or_run_dir)
    table_path = root / f"{dataset}.parquet"
    if not table_path.exists():
        known = curated_datasets(ctx_or_run_dir)
        raise FileNotFoundError(f"no embedded curated dataset '{dataset}' in {root} (embedded: {known})")
    table = pq.read_table(table_path)
    rows = embedded_rows(table)
    meta = table.take(pa.array(rows)).select(["key", "path", "label", "meta"])
    keys = np.asarray(meta.column("key").to_numpy(zero_copy_only=False), dtype=str)
    return keys, _as_float32(_load(root / f"{dataset}.npy")), meta
