"""Flat k-means of the cluster stage, its training sample split over workers.

The training sample (``min(n, k * max_points_per_centroid)`` sorted pool
indices, :func:`~curation.algorithms.kmeans.sample_indices`) is cut into
``cluster.train.workers`` contiguous ranges. The train step holds the first
range itself (on its whole node, as before); each other range lives in a
helper worker (:class:`TrainShard`) that reads its rows from the embedding
files once and then answers
:func:`~curation.algorithms.kmeans_sharded.partial_stats` for every
iteration with Faiss on its grant (its CPUs' threads, or every GPU of its
node). The step adds the shards' sums as they arrive, one at a time.

Memory per worker: ``n_train / workers * d * 4`` bytes of rows plus
``k * d * 16`` (centroids, index, sums); the train step adds ``k * d * 20``
(running total, one arriving shard's sums, new centroids) and the sample's
indices (``n_train * 8``) while the shards start.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from curation.algorithms.hkmeans_sharded import PoolPart
from curation.algorithms.kmeans_sharded import ShardStats, partial_stats
from curation.algorithms.sharded_index import shard_ranges
from curation.atomic import tmp_name
from curation.stages.base import Grant, Resources, StageContext, WorkerGroup, Workers
from curation.stages.embed import arrays as embeddings


class TrainShard:
    """Rows ``indices`` (sorted global pool indices) of the training sample, in one worker."""

    def __init__(self, ctx: StageContext, indices: np.ndarray, spherical: bool, device: str, grant: Grant):
        from curation.algorithms.kmeans import use_gpu

        self.x = embeddings.take_pool_rows(ctx, indices)
        self.spherical = spherical
        # Every GPU the worker was granted (a whole node's, with the default resources).
        self.gpu = grant.num_gpus > 0 and use_gpu(device)

    def size(self) -> int:
        return int(self.x.shape[0])

    def stats(self, centroids: np.ndarray) -> ShardStats:
        return partial_stats(self.x, centroids, spherical=self.spherical, gpu=self.gpu)

    def take(self, rows: np.ndarray) -> np.ndarray:
        return self.x[rows]

    def describe(self) -> dict[str, Any]:
        return {"rows": self.size(), "gpu": self.gpu}


class SplitSample:
    """:class:`~curation.algorithms.kmeans_sharded.Shards`: shard 0 in this process, the others in helpers."""

    def __init__(self, local: TrainShard, group: WorkerGroup | None, helpers: int):
        self.local, self.group, self.helpers = local, group, helpers
        remote = group.call("size", [()] * helpers) if group is not None else []
        self._sizes = [local.size(), *remote]
        self.starts = np.cumsum([0, *self._sizes])

    def sizes(self) -> list[int]:
        return list(self._sizes)

    def stats(self, centroids: np.ndarray) -> Iterator[ShardStats]:
        # The helpers start before the local shard is computed; their sums then arrive one at a time.
        pending = self.group.imap("stats", [(centroids,)] * self.helpers) if self.group else iter(())
        yield self.local.stats(centroids)
        yield from pending

    def take(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        which = np.searchsorted(self.starts, rows, side="right") - 1
        asks = [rows[which == s] - self.starts[s] for s in range(len(self._sizes))]
        parts = [self.local.take(asks[0])]
        if self.group is not None:
            parts += self.group.call("take", [(a,) for a in asks[1:]])
        out = np.empty((len(rows), self.local.x.shape[1]), dtype=np.float32)
        for s, part in enumerate(parts):
            out[which == s] = part
        return out

    def describe(self) -> list[dict[str, Any]]:
        """Per shard: rows, GPU use and, for the helpers, placement and peak memory."""
        shards = [{**self.local.describe(), "worker": "train step"}]
        if self.group is not None:
            described = self.group.call("describe", [()] * self.helpers)
            shards += [{**info, **d} for info, d in zip(self.group.info(), described, strict=True)]
        return shards

    def stop(self) -> None:
        if self.group is not None:
            self.group.stop()


def split_sample(
    ctx: StageContext,
    workers: Workers,
    grant: Grant,
    indices: np.ndarray,
    count: int,
    resources: Resources,
    spherical: bool,
    device: str,
) -> SplitSample:
    """The sample ``indices`` in ``count`` contiguous ranges: the first here, the others in helpers."""
    bounds = np.linspace(0, len(indices), count + 1).astype(np.int64)
    args = [(ctx, indices[lo:hi], spherical, device) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]
    group = workers.start(TrainShard, args[1:], resources, "Shard") if count > 1 else None
    try:
        return SplitSample(TrainShard(*args[0], grant=grant), group, count - 1)
    except BaseException:
        if group is not None:
            group.stop()
        raise


class PoolShard(PoolPart):
    """The embeddings of some pool partitions (first pool row ``offset``), read once in their worker."""

    def __init__(self, ctx: StageContext, partitions: list[int], offset: int, device: str, grant: Grant):
        from curation.algorithms.kmeans import as_points, use_gpu

        x = np.concatenate([as_points(embeddings.partition_embeddings(ctx, p)[1]) for p in partitions])
        super().__init__(x, offset, True, grant.num_gpus > 0 and use_gpu(device))


@dataclass
class SplitPool:
    """The pool in ``count`` shards: the first in the train step, the others in helpers."""

    local: PoolShard
    group: WorkerGroup | None
    sizes: list[int]

    @property
    def count(self) -> int:
        return len(self.sizes)

    def fan(self, method: str, args: list[tuple]) -> Iterator[Any]:
        # The helpers' calls start before the local one runs; their results then arrive one at a time.
        pending = self.group.imap(method, args[1:]) if self.group is not None else iter(())
        yield getattr(self.local, method)(*args[0])
        yield from pending

    def write_points(self, out_dir: Path) -> None:
        """``points.{leaf,similarity,selected}.npy`` (n,), filled shard by shard, then renamed into place."""
        n = sum(self.sizes)
        names = (("leaf", np.int64), ("similarity", np.float32), ("selected", np.bool_))
        tmp = {name: tmp_name(out_dir / f"points.{name}.npy") for name, _ in names}
        arrays = {name: np.lib.format.open_memmap(tmp[name], "w+", dtype, (n,)) for name, dtype in names}
        start = 0
        for result in self.fan("results", [()] * self.count):
            for (name, _), values in zip(names, result, strict=True):
                arrays[name][start : start + len(values)] = values
            start += len(result[0])
        for name, _ in names:
            arrays[name].flush()
            del arrays[name]
            tmp[name].replace(out_dir / f"points.{name}.npy")

    def describe(self) -> list[dict[str, Any]]:
        shards = [{"rows": self.sizes[0], "gpu": self.local.gpu, "worker": "train step"}]
        if self.group is not None:
            shards += [{**info, "rows": rows} for info, rows in zip(self.group.info(), self.sizes[1:], strict=True)]
        return shards

    def stop(self) -> None:
        if self.group is not None:
            self.group.stop()


def split_pool(
    ctx: StageContext, workers: Workers, grant: Grant, count: int, resources: Resources, device: str
) -> SplitPool:
    """The pool's partitions in ``count`` contiguous ranges balanced by rows: the first here, the others in helpers."""
    partitions = embeddings.pool_partitions(ctx)
    counts = embeddings.pool_counts(ctx)
    ranges = shard_ranges([counts[p] for p in partitions], count)
    sizes = [sum(counts[p] for p in partitions[lo:hi]) for lo, hi in ranges]
    offsets = np.cumsum([0, *sizes])
    args = [(ctx, partitions[lo:hi], int(off), device) for (lo, hi), off in zip(ranges, offsets[:-1], strict=True)]
    group = workers.start(PoolShard, args[1:], resources, "PoolShard") if len(args) > 1 else None
    try:
        return SplitPool(PoolShard(*args[0], grant=grant), group, sizes)
    except BaseException:
        if group is not None:
            group.stop()
        raise
