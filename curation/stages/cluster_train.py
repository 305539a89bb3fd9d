"""Flat k-means of the cluster stage, its training sample split over helper workers.

The training sample (``min(n, k * max_points_per_centroid)`` sorted pool
indices, :func:`~curation.algorithms.kmeans.sample_indices`) is cut into
``cluster.train.workers`` contiguous ranges; each :class:`TrainShard` reads
its rows from the embedding files once, in its own worker, and then answers
:func:`~curation.algorithms.kmeans_sharded.partial_stats` for every
iteration with Faiss on its grant (its CPUs' threads, or every GPU of its
node). The train step itself only reduces: it never holds the sample.

Memory per shard: ``n_train / workers * d * 4`` bytes of rows plus
``k * d * 16`` (centroids, index, sums); of the train step: ``k * d * 20``
plus the sample's indices (``n_train * 8``) while the shards start.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from curation import embeddings
from curation.algorithms.kmeans_sharded import ShardStats, partial_stats
from curation.stages.base import Grant, Resources, StageContext, WorkerGroup, Workers


class TrainShard:
    """Rows ``indices`` (sorted global pool indices) of the training sample, in one worker."""

    def __init__(self, run_dir: str, config_data: dict[str, Any], indices: np.ndarray, spherical: bool,
                 device: str, grant: Grant):
        from curation.algorithms.kmeans import use_gpu

        ctx = StageContext(Path(run_dir), config_data, "cluster")
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


class GroupShards:
    """:class:`~curation.algorithms.kmeans_sharded.Shards` over started :class:`TrainShard` workers."""

    def __init__(self, group: WorkerGroup, sizes: list[int]):
        self.group = group
        self._sizes = sizes
        self.starts = np.cumsum([0, *sizes])

    def sizes(self) -> list[int]:
        return list(self._sizes)

    def stats(self, centroids: np.ndarray) -> Iterator[ShardStats]:
        # One shard's sums at a time reach this process: memory k * d * 16, not workers times that.
        return self.group.imap("stats", [(centroids,)] * len(self._sizes))

    def take(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        which = np.searchsorted(self.starts, rows, side="right") - 1
        asks = [(rows[which == s] - self.starts[s],) for s in range(len(self._sizes))]
        parts = self.group.call("take", asks)
        out = np.empty((len(rows), parts[0].shape[1]), dtype=np.float32)
        for s, part in enumerate(parts):
            out[which == s] = part
        return out


def start_train_shards(ctx: StageContext, workers: Workers, indices: np.ndarray, count: int,
                       resources: Resources, spherical: bool, device: str) -> GroupShards:
    """``count`` shards of the sample ``indices`` (contiguous ranges, sizes within one of each other)."""
    bounds = np.linspace(0, len(indices), count + 1).astype(np.int64)
    args = [(str(ctx.run_dir), ctx.config_data, indices[lo:hi], spherical, device)
            for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]
    group = workers.start(TrainShard, args, resources, "TrainShard")
    return GroupShards(group, group.call("size", [()] * count))
