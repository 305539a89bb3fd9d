"""The retrieval pool, read partition by partition, never whole.

The candidates are the alive (status ``success`` in the ``cluster`` table)
embedded pool samples, in pool order: embedded partitions ascending, then
``.npy`` order; candidate ``i`` of that order has global id ``i``. The
search step holds none of their vectors:

- vectors live in index shards (:class:`PoolShard`), one contiguous range of
  partitions each, built by the shard itself from its files;
- cluster mode streams the cluster column partition by partition and keeps
  only the best ``per_cluster`` candidates of each qualifying cluster
  (:func:`cluster_hits`);
- the selected candidates' keys, rows and clusters are read back, partition
  by partition, when the selection is written (:func:`describe`).

Memory of the search process: the queries, the hits, one partition's
columns and the partition counts; of a shard: its vectors' index.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from curation import tables
from curation.algorithms import retrieval as rt
from curation.algorithms.sharded_index import (
    IndexShard,
    RowsView,
    ShardedIndex,
    shard_ranges,
)
from curation.errors import PartitionError
from curation.stages.base import Grant, StageContext
from curation.stages.embed import arrays as embeddings
from curation.stages.retrieve.io import CLUSTER_STAGE

CLUSTER_COLUMN = "cluster"
# Cosine similarity of a pool sample to its centroid, in the cluster table.
CLOSENESS_COLUMN = "similarity"


@dataclass
class Candidates:
    """The candidates of one partition: ``(m,)`` arrays in ``.npy`` order.

    ``npy_rows``: row in the partition's ``.npy``; ``rows``: row in its
    tables; ``clusters`` (-1: none); ``closeness``: similarity to the
    centroid. ``x`` is the partition's memory-mapped ``.npy``.
    """

    x: np.ndarray
    npy_rows: np.ndarray
    rows: np.ndarray
    clusters: np.ndarray
    closeness: np.ndarray

    def __len__(self) -> int:
        return int(self.rows.shape[0])


def partition_candidates(ctx: StageContext, partition: int) -> Candidates:
    """Candidates of one partition; its tables keep row order, so rows index both."""
    _, x, rows = embeddings.partition_embeddings(ctx, partition)
    path = ctx.table_path(CLUSTER_STAGE, partition)
    if not path.exists():
        raise PartitionError(f"retrieve: {path} is missing: the cluster stage is not complete")
    table = tables.read_parquet(path, ["status", CLUSTER_COLUMN, CLOSENESS_COLUMN])
    pick = np.flatnonzero(tables.alive(table)[rows])
    at = rows[pick]
    clusters = table.column(CLUSTER_COLUMN).fill_null(-1).to_numpy(zero_copy_only=False)[at]
    closeness = table.column(CLOSENESS_COLUMN).fill_null(-1.0).to_numpy(zero_copy_only=False)[at]
    return Candidates(
        x, pick.astype(np.int64), at.astype(np.int64), clusters.astype(np.int64), closeness.astype(np.float32)
    )


class PoolShard(IndexShard):
    """The candidates of some partitions and their Faiss index (``index=False``: vectors only).

    Built inside its worker from the run directory; a shard granted no GPU
    keeps Faiss on the CPU.
    """

    def __init__(self, ctx: StageContext, partitions: list[int], index: Any, build: bool, seed: int, grant: Grant):
        parts, self.counts = [], []
        for p in partitions:
            c = partition_candidates(ctx, p)
            parts.append((c.x, c.npy_rows))
            self.counts.append(len(c))
        dim = embeddings.pool_dim(ctx)
        if not grant.num_gpus and index.use_gpu is None:  # granted no GPU: Faiss stays on the CPU
            index = index.model_copy(update={"use_gpu": False})
        view = RowsView(parts, dim)
        if build:
            super().__init__(view, index, "ip", seed)
        else:
            self.vectors, self.metric, self.index = view, "ip", None
            self.timings = {"build_s": 0.0, "search_s": 0.0, "queries": 0}

    def partition_counts(self) -> list[int]:
        return self.counts


def shard_index_config(index: Any, n_total: int, n_shard: int) -> Any:
    """The index config of one shard: ``auto`` decided on the whole pool.

    Every shard trains its own ``nlist`` lists (fewer if it has under 39
    vectors per list) and probes ``nprobe`` of them: the vectors scanned per
    query, summed over the shards, are those of one index with the same
    settings, and recall is at least as high (measured in the tests).
    """
    from curation.algorithms.index import resolve_kind

    update: dict[str, Any] = {"kind": resolve_kind(n_total, index)}
    if index.nlist is not None:
        update["nlist"] = max(1, min(index.nlist, n_shard // 39))
    return index.model_copy(update=update)


@dataclass
class ShardedPool:
    """The started shards: the index over global ids, and the partition counts."""

    index: ShardedIndex
    group: Any
    partitions: list[int]
    counts: list[int]

    @property
    def size(self) -> int:
        return int(sum(self.counts))

    def starts(self) -> np.ndarray:
        return np.cumsum([0] + self.counts)


def start_shards(ctx: StageContext, workers: Any, shards: int | None, resources: Any, build: bool) -> ShardedPool:
    """Start ``shards`` pool shards (null: one per worker node) and wait until they are built."""
    partitions = embeddings.pool_partitions(ctx)
    counts = embeddings.pool_counts(ctx)
    ranges = shard_ranges([counts[p] for p in partitions], shards or workers.nodes)
    cfg = ctx.stage_config.index
    total = sum(counts.values())
    args = []
    for lo, hi in ranges:
        n = sum(counts[p] for p in partitions[lo:hi])
        args.append((ctx, partitions[lo:hi], shard_index_config(cfg, total, n), build, ctx.seed))
    group = workers.start(PoolShard, args, resources, "Shard")
    per_shard = group.call("partition_counts", [()] * len(args))
    flat = [c for shard in per_shard for c in shard]
    index = ShardedIndex(group, [sum(c) for c in per_shard], "ip", cfg.search_batch)
    return ShardedPool(index, group, partitions, flat)


def cluster_hits(
    ctx: StageContext,
    pool: ShardedPool,
    qualifying: np.ndarray,
    selection: rt.Selection,
    rng: np.random.Generator,
    per_cluster: int,
    dataset: int,
) -> rt.Hits:
    """:func:`retrieval.cluster_hits` over the pool, streamed partition by partition.

    The random draws are taken partition by partition from ``rng``: the
    same stream as one draw over the whole pool. Only the best
    ``per_cluster`` candidates of each qualifying cluster are kept between
    partitions; ranks are recomputed on them at the end, which gives the
    ranks over the whole pool (ties in global-id order).
    """
    from curation.algorithms.hkmeans import rank_in_group

    ids, clusters, order = np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64)
    for p, start in zip(pool.partitions, pool.starts(), strict=False):
        c = partition_candidates(ctx, p)
        draw = rt.selection_order(selection, c.closeness, rng)
        hit = np.flatnonzero(np.isin(c.clusters, qualifying) & (c.clusters >= 0))
        ids = np.concatenate([ids, start + hit])
        clusters = np.concatenate([clusters, c.clusters[hit]])
        order = np.concatenate([order, draw[hit]])
        keep = rank_in_group(clusters, -order) < per_cluster
        ids, clusters, order = ids[keep], clusters[keep], order[keep]
    rank = rank_in_group(clusters, -order)
    h = len(ids)
    return rt.Hits.build(ids, np.full(h, -1), np.full(h, np.nan), rank, clusters, dataset)


def attribute(pool: ShardedPool, hits: rt.Hits, queries: np.ndarray, query_clusters: np.ndarray) -> rt.Hits:
    """:func:`retrieval.attribute_queries`, with the hits' vectors gathered from the shards."""
    vectors = pool.index.take(hits.pool) if len(hits) else np.zeros((0, queries.shape[1]), np.float32)
    local = replace(hits, pool=np.arange(len(hits), dtype=np.int64))
    return replace(rt.attribute_queries(local, vectors, queries, query_clusters), pool=hits.pool)


def describe(ctx: StageContext, pool: ShardedPool, ids: np.ndarray) -> dict[str, np.ndarray]:
    """``key``, ``partition``, ``row`` and ``cluster`` of candidates ``ids``, read partition by partition."""
    ids = np.asarray(ids, dtype=np.int64)
    starts = pool.starts()
    which = np.searchsorted(starts, ids, side="right") - 1
    out = {
        "key": np.empty(len(ids), dtype=object),
        "partition": np.empty(len(ids), np.int64),
        "row": np.empty(len(ids), np.int64),
        "cluster": np.empty(len(ids), np.int64),
    }
    for i in np.unique(which):
        at = np.flatnonzero(which == i)
        p = pool.partitions[i]
        c = partition_candidates(ctx, p)
        rows = c.rows[ids[at] - starts[i]]
        keys = tables.read_parquet(ctx.table_path(CLUSTER_STAGE, p), ["key"]).column("key")
        out["key"][at] = np.asarray(keys.to_numpy(zero_copy_only=False), dtype=object)[rows]
        out["partition"][at] = p
        out["row"][at] = rows
        out["cluster"][at] = c.clusters[ids[at] - starts[i]]
    return out
