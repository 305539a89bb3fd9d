"""What the ``retrieve`` stage reads and writes.

Reads: the pool embeddings (``curation.embeddings``), the ``cluster``
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation import tables
from curation.errors import PartitionError

CLUSTER_STAGE = "cluster"
CLUSTER_COLUMN = "cluster"
# Cosine similarity of a pool sample to its centroid, in the cluster table.
CLOSENESS_COLUMN = "similarity"
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


@dataclass
class Pool:
    """The alive, embedded pool samples: the retrieval candidates.

    Arrays are indexed by candidate (n,): ``keys``, ``partitions``, ``rows``
    (row in the partition's tables), ``clusters`` (-1: none), ``closeness``
    (cosine similarity to the own centroid); ``x`` (n, d) float32
    L2-normalised. ``centroids`` (c, d): the cluster stage's spherical
    k-means centroids.
    """

    keys: np.ndarray
    partitions: np.ndarray
    rows: np.ndarray
    x: np.ndarray
    clusters: np.ndarray
    closeness: np.ndarray
    centroids: np.ndarray
    partitions_all: list[int]

    @property
    def size(self) -> int:
        return int(self.keys.shape[0])

    @property
    def num_clusters(self) -> int:
        return int(self.centroids.shape[0])

    def assign(self, queries: np.ndarray, gpu: bool = False) -> np.ndarray:
        """Nearest centroid (q,) of each query, as the cluster stage assigns."""
        from curation.algorithms.kmeans import assign

        if queries.shape[0] == 0 or self.num_clusters == 0:
            return np.full(queries.shape[0], -1, dtype=np.int64)
        labels, _ = assign(queries, self.centroids, spherical=True, gpu=gpu)
        return labels


def load_pool(ctx: Any) -> Pool:
    from curation.embeddings import load_pool_embeddings

    keys, x, partitions, rows = load_pool_embeddings(ctx.run_dir)
    table = ctx.read_table(CLUSTER_STAGE, ["key", "status", CLUSTER_COLUMN, CLOSENESS_COLUMN])
    centroids_path = ctx.step_dir(CENTROIDS[0], CLUSTER_STAGE) / CENTROIDS[1]
    if table.num_rows == 0 or not centroids_path.exists():
        raise PartitionError(f"retrieve: the cluster stage's table or {centroids_path} is missing")
    at = pc.index_in(pa.array(keys, pa.string()), value_set=table.column("key"))
    found = at.is_valid().to_numpy(zero_copy_only=False)
    at = pc.fill_null(at, 0).to_numpy(zero_copy_only=False)
    alive = found & tables.alive(table)[at]
    pick = np.flatnonzero(alive)
    at = at[pick]
    clusters = pc.fill_null(table.column(CLUSTER_COLUMN), -1).to_numpy(zero_copy_only=False)[at]
    closeness = pc.fill_null(table.column(CLOSENESS_COLUMN), -1.0).to_numpy(zero_copy_only=False)[at]
    x = x if pick.size == x.shape[0] else x[pick]
    centroids = np.load(centroids_path, allow_pickle=False)
    return Pool(keys[pick], partitions[pick], rows[pick], np.ascontiguousarray(x, dtype=np.float32),
                clusters.astype(np.int64), closeness.astype(np.float32), centroids,
                ctx.partitions(CLUSTER_STAGE))


def load_queries(ctx: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    """``(keys (q,), x (q, d) float32)`` of an embedded curated set."""
    from curation.embeddings import load_curated_embeddings

    try:
        keys, x, _ = load_curated_embeddings(ctx.run_dir, name)
    except FileNotFoundError as err:
        raise PartitionError(f"retrieve: {err}: run the embed stage with this set in embed.curated") from None
    return keys, np.ascontiguousarray(x, dtype=np.float32)


class Searcher:
    """The pool's kNN index, built on the first sample-mode search only."""

    def __init__(self, pool: Pool, config: Any, seed: int):
        from curation.algorithms.index import gpu_count

        self.pool, self.config, self.seed = pool, config, seed
        self.gpus = gpu_count(config)
        self.index = None

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, ids)`` (q, min(k, n)); ids index the pool candidates."""
        from curation.algorithms.index import build_index

        k = min(k, self.pool.size)
        if k == 0 or queries.shape[0] == 0:
            return np.zeros((queries.shape[0], 0), np.float32), np.zeros((queries.shape[0], 0), np.int64)
        if self.index is None:
            self.index = build_index(self.pool.x, self.config, "ip", self.seed)
        return self.index.search(queries, k)


def selection_table(resolved, pool: Pool, queries: list[np.ndarray], datasets: list[Any],
                    query_sets: list[str]) -> pa.Table:
    """The selected copies as a table of :data:`SELECTION_SCHEMA`, in pool order."""
    hits = resolved.hits
    query_key = np.empty(len(hits), dtype=object)
    for i, keys in enumerate(queries):
        at = hits.dataset == i
        query_key[at] = keys[hits.query[at]] if keys.size else None
    columns = {
        "key": pool.keys[hits.pool],
        "partition": pool.partitions[hits.pool],
        "row": pool.rows[hits.pool],
        "copy": resolved.copy,
        "copies": resolved.copies,
        "dataset": np.array([d.name for d in datasets], dtype=object)[hits.dataset],
        "mode": np.array([d.mode for d in datasets], dtype=object)[hits.dataset],
        "query_dataset": np.array(query_sets, dtype=object)[hits.dataset],
        "query_key": query_key,
        "similarity": hits.similarity,
        "rank": hits.rank,
        "cluster": hits.cluster,
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


def join_status(batch: pa.Table, lookup: pa.Table, columns: list[str], stage: str, status: str,
                present: str, reason: str | None = None) -> pa.Table:
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
