"""What the ``retrieve`` stage reads and writes.

Reads: the pool embeddings (``curation.stages.embed.arrays``), the ``cluster``
stage's table (status and cluster id of every pool sample) and centroids,
and the embedded curated query sets.

Writes, under ``stages/retrieve/search/``:

- ``selected/part-NNNNNN.parquet`` for every pool partition: one row per
  selected copy of a pool image, sorted by table row then copy, with the
  columns of :data:`SELECTION_SCHEMA`;
- ``summary.json``: per-dataset counts and the collision report.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation import tables
from curation.errors import PartitionError

CLUSTER_STAGE = "cluster"
CENTROIDS = ("train", "centroids.npy")
SELECTED_DIR = "selected"
PLACEHOLDER = re.compile(r"<[^<>]*>")

SELECTION_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),  # pool sample key
        pa.field("partition", pa.int64()),  # pool partition
        pa.field("row", pa.int64()),  # row in the partition's tables
        pa.field("copy", pa.int32()),  # 0: best hit; 1, 2...: duplicates (keep_duplicates)
        pa.field("copies", pa.int32()),  # hits on this image before collision resolution
        pa.field("dataset", pa.string()),  # retrieval entry (composition key)
        pa.field("mode", pa.string()),  # sample | cluster
        pa.field("query_dataset", pa.string()),  # image set of the query
        pa.field("query_key", pa.string()),
        pa.field("similarity", pa.float32()),  # cosine similarity image-query
        pa.field("rank", pa.int32()),  # neighbour rank (sample) or rank in cluster (cluster)
        pa.field("cluster", pa.int64()),  # pool cluster of the image
    ]
)
# Columns the stage table carries for each selected sample (its best copy).
MARK_COLUMNS = ["dataset", "mode", "query_dataset", "query_key", "similarity", "rank", "cluster", "copies"]


def is_placeholder(path: str) -> bool:
    """Paths like ``<IMAGENET22K_TRAIN>`` are left for the user to fill in."""
    return bool(PLACEHOLDER.search(path))


def embedded_sets(config: Any) -> dict[str, Any]:
    """``name -> ImageSetConfig`` of the image sets the embed stage embeds."""
    embed = getattr(config, "embed", None)
    return {s.name: s for s in (getattr(embed, "curated", None) or [])}


def load_centroids(ctx: Any) -> np.ndarray:
    """The cluster stage's centroids ``(c, d)``."""
    path = ctx.step_dir(CENTROIDS[0], CLUSTER_STAGE) / CENTROIDS[1]
    if not path.exists():
        raise PartitionError(f"retrieve: {path} is missing: run the cluster stage")
    return np.load(path, allow_pickle=False)


def assign(centroids: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Nearest centroid (q,) of each query, as the cluster stage assigns (-1 without centroids)."""
    from curation.algorithms.kmeans import assign as nearest

    if queries.shape[0] == 0 or centroids.shape[0] == 0:
        return np.full(queries.shape[0], -1, dtype=np.int64)
    labels, _ = nearest(queries, centroids, spherical=True)
    return labels


def load_queries(ctx: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    """``(keys (q,), x (q, d) float32)`` of an embedded curated set."""
    from curation.stages.embed.arrays import load_curated_embeddings

    try:
        keys, x, _ = load_curated_embeddings(ctx.run_dir, name)
    except FileNotFoundError as err:
        raise PartitionError(f"retrieve: {err}: run the embed stage with this set in embed.curated") from None
    return keys, np.ascontiguousarray(x, dtype=np.float32)


def selection_table(
    resolved, described: dict[str, np.ndarray], queries: list[np.ndarray], datasets: list[Any], query_sets: list[str]
) -> pa.Table:
    """The selected copies as a table of :data:`SELECTION_SCHEMA`, in pool order.

    ``described``: ``key``, ``partition``, ``row`` and ``cluster`` of each hit's pool image.
    """
    hits = resolved.hits
    query_key = np.empty(len(hits), dtype=object)
    for i, keys in enumerate(queries):
        at = hits.dataset == i
        query_key[at] = keys[hits.query[at]] if keys.size else None
    columns = {
        "key": described["key"],
        "partition": described["partition"],
        "row": described["row"],
        "copy": resolved.copy,
        "copies": resolved.copies,
        "dataset": np.array([d.name for d in datasets], dtype=object)[hits.dataset],
        "mode": np.array([d.mode for d in datasets], dtype=object)[hits.dataset],
        "query_dataset": np.array(query_sets, dtype=object)[hits.dataset],
        "query_key": query_key,
        "similarity": hits.similarity,
        "rank": hits.rank,
        "cluster": described["cluster"],
    }
    return pa.table({f.name: pa.array(columns[f.name], f.type) for f in SELECTION_SCHEMA}, schema=SELECTION_SCHEMA)


def selection_path(step_dir: Path, partition: int) -> Path:
    return Path(step_dir) / SELECTED_DIR / f"{tables.partition_name(partition)}.parquet"


def write_selection(step_dir: Path, table: pa.Table, partitions: list[int]) -> None:
    """One file per pool partition (empty ones too): the map steps read theirs."""
    part = table.column("partition").to_numpy()
    for p in partitions:
        lo, hi = np.searchsorted(part, [p, p + 1])
        tables.write_parquet(table.slice(lo, hi - lo), selection_path(step_dir, p))


def read_selection(step_dir: Path, partition: int) -> pa.Table:
    path = selection_path(step_dir, partition)
    if not path.exists():
        raise PartitionError(f"{path} is missing: rerun the retrieve stage's search step")
    return tables.read_parquet(path)


def join_status(
    batch: pa.Table,
    lookup: pa.Table,
    columns: list[str],
    stage: str,
    status: str,
    present: str,
    reason: str | None = None,
) -> pa.Table:
    """A stage-table batch: ``batch``'s keys joined to ``lookup`` by key.

    Rows whose joined ``present`` column is null are dropped by ``stage``
    with ``status``; their error is ``lookup``'s ``error`` column when it
    has one, else ``reason``. ``columns`` of ``lookup`` are appended (null
    where no row matched).
    """
    picked = lookup.take(pc.index_in(batch.column("key"), value_set=lookup.column("key")))
    kept = picked.column(present).is_valid().to_numpy(zero_copy_only=False)
    out = tables.status_table(batch.column("key").to_pylist(), [tables.SUCCESS] * batch.num_rows)
    errors = picked.column("error").to_pylist() if "error" in picked.column_names else [None] * len(kept)
    out = tables.drop(out, ~kept, stage, status, [e or reason for e in errors])
    for name in columns:
        out = out.append_column(picked.schema.field(name), picked.column(name))
    return out


def first_copies(table: pa.Table) -> pa.Table:
    return table.filter(pc.equal(table.column("copy"), 0))
