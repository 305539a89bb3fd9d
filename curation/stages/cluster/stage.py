"""Stage ``cluster``: k-means over the pool embeddings.

Two modes (``cluster.mode``):

- ``flat`` (DINOv2): spherical Faiss k-means trained on a seeded sample of
  at most ``k * max_points_per_centroid`` embeddings, then every embedding
  assigned to its nearest centroid, partition by partition. Feeds
  cluster-based retrieval.
- ``hierarchical`` (retrieval-free, after Vo et al. 2024): hierarchical
  k-means with resampling over the whole pool, then balanced sampling of
  ``target_size`` samples; the others are dropped with status
  ``not_selected``.

Steps and files (``<run_dir>/stages/cluster/``)::

    train/centroids.npy               (k, d) float32 leaf centroids (unit norm)
    train/level-T.centroids.npy       hierarchical: (k_T, d) centroids of level T (0 = leaves)
    train/level-T.parents.npy         hierarchical: (k_T,) int64 level-(T+1) cluster of each level-T cluster
    train/points.{leaf,similarity,selected}.npy, train/points.json
                                      hierarchical: per embedded sample, in embeddings order
    assign/part-NNNNNN.parquet        the stage table (below)
    sizes/sizes.parquet               level, cluster, size (+ selected in hierarchical mode)

Table columns: the status columns, ``cluster`` (int64 leaf cluster, -1 when
not embedded), ``similarity`` (float32 cosine similarity to the centroid,
null when not embedded); hierarchical mode adds ``cluster_path``
(list<int64>, top level first, leaf last) and ``selected`` (bool).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from curation import tables
from curation.atomic import read_json, write_json
from curation.errors import ConfigError, RunError
from curation.stages.base import GlobalStep, MapStep, Resources, Stage, device_gpus
from curation.stages.cluster.config import ClusterConfig, clamp_levels
from curation.stages.embed import arrays as embeddings
from curation.stages.registry import register

log = logging.getLogger("curation")
STAGE = "cluster"
NOT_SELECTED = "not_selected"


class Train(GlobalStep[ClusterConfig]):
    """k-means on one whole worker node (its Faiss threads or GPUs are all the node's).

    Flat mode spreads the training sample over ``cluster.train.workers``,
    hierarchical mode the whole pool (its first level and the balanced
    selection; the levels above cluster centroids here): this step holds one
    share and reduces the others' results.
    """

    name = "train"

    def resources(self) -> Resources:
        return Resources(num_gpus=device_gpus(self.cfg.device), whole_node=True)

    def worker_resources(self) -> Resources:
        t = self.cfg.train
        return Resources(
            num_cpus=t.num_cpus or 1.0,
            num_gpus=device_gpus(self.cfg.device),
            memory=int(t.memory_gb * 2**30),
            whole_node=t.num_cpus is None,
            key="cluster.train.num_cpus / cluster.train.memory_gb",
        )

    def requests(self) -> list[tuple[str, Resources]]:
        return [*super().requests(), ("train workers", self.worker_resources())]

    def run(self, out_dir: Path) -> dict[str, Any]:
        from curation.algorithms.kmeans import use_gpu

        counts = embeddings.pool_counts(self.ctx)
        n = sum(counts.values())
        if n == 0:
            raise RunError("cluster: the pool has no embedded samples (see the embed stage's statuses)")
        gpu = self.grant.num_gpus > 0 and use_gpu(self.cfg.device)
        if self.cfg.mode == "hierarchical":
            return self._hierarchical(out_dir, counts, gpu)
        return self._flat(out_dir, n)

    def _flat(self, out_dir: Path, n: int) -> dict[str, Any]:
        from curation.algorithms.kmeans import kmeans_plus_plus_seeds, sample_indices
        from curation.algorithms.kmeans_sharded import train_sharded
        from curation.stages.cluster.train import split_sample

        cfg, seed, helpers = self.cfg, self.ctx.seed, self.workers
        assert helpers is not None  # the runner sets it for global steps
        (k,) = clamp_levels([cfg.k], n, cfg.clamp_k, "cluster.k")
        idx = sample_indices(n, k, cfg.max_points_per_centroid, seed)
        m = len(idx)
        count = min(cfg.train.workers or helpers.nodes, m)
        shards = split_sample(self.ctx, helpers, self.grant, idx, count, self.worker_resources(), True, cfg.device)
        del idx  # the shards hold their ranges
        try:
            seeds = None
            if cfg.init == "kmeans++":
                seeds = kmeans_plus_plus_seeds(shards.take, m, k, cfg.max_points_per_centroid, seed)
            result = train_sharded(
                shards, k, n_iter=cfg.n_iter, seed=seed, n_redo=cfg.n_redo, init=seeds, progress=self.report_progress
            )
            workers = shards.describe()
        finally:
            shards.stop()
        embeddings.save_array_atomic(out_dir / "centroids.npy", result.centroids)
        if k < cfg.k:
            log.warning("cluster: k lowered from %d to the %d embedded samples", cfg.k, k)
        return {
            "mode": "flat",
            "k_requested": cfg.k,
            "k": k,
            "clamped": k < cfg.k,
            "points": n,
            "train_points": result.n_train,
            "objective": result.objective,
            "gpu": any(w["gpu"] for w in workers),
            "workers": workers,
        }

    def _hierarchical(self, out_dir: Path, counts: dict[int, int], gpu: bool) -> dict[str, Any]:
        from curation.algorithms.hkmeans import (
            KMeansOptions,
            LevelSpec,
            resampled_kmeans,
        )
        from curation.algorithms.hkmeans_sharded import first_level, select_balanced
        from curation.stages.cluster.train import split_pool

        hcfg, seed, helpers = self.cfg.hierarchy, self.ctx.seed, self.workers
        assert helpers is not None  # the runner sets it for global steps
        n = sum(counts.values())
        ks = clamp_levels(
            [lv.n_clusters for lv in hcfg.levels], n, self.cfg.clamp_k, "cluster.hierarchical.levels.0.n_clusters"
        )
        specs = [
            LevelSpec(k, lv.n_resampling_steps, lv.sample_size, lv.init) for k, lv in zip(ks, hcfg.levels, strict=True)
        ]
        options = KMeansOptions(
            n_iter=self.cfg.n_iter,
            strategy=hcfg.sampling_strategy,
            seed=seed,
            max_points_per_centroid=self.cfg.max_points_per_centroid,
            gpu=gpu,
        )
        count = self.cfg.train.workers or helpers.nodes
        pool = split_pool(self.ctx, helpers, self.grant, count, self.worker_resources(), self.cfg.device)
        try:
            # Level 0 over the pool's shards; the levels above cluster centroids, here.
            leaves, sizes = first_level(pool.fan, pool.sizes, specs[0], options)
            centroids, parents, level_sizes = [leaves], [], [sizes]
            self.report_progress(1, len(specs))
            for t, spec in enumerate(specs[1:], start=1):
                c, parent, _ = resampled_kmeans(centroids[-1], spec, replace(options, seed=seed + t))
                centroids.append(c)
                parents.append(parent)
                level_sizes.append(np.bincount(parent, weights=level_sizes[-1], minlength=len(c)).astype(np.int64))
                self.report_progress(t + 1, len(specs))
            selected = select_balanced(
                pool.fan, pool.count, level_sizes, parents, hcfg.target_size, hcfg.sampling_strategy, seed
            )
            pool.write_points(out_dir)
            workers = pool.describe()
        finally:
            pool.stop()
        save = embeddings.save_array_atomic
        save(out_dir / "centroids.npy", leaves)
        for t, c in enumerate(centroids):
            save(out_dir / f"level-{t}.centroids.npy", c)
        for t, parent in enumerate(parents):
            save(out_dir / f"level-{t}.parents.npy", parent, "int64")
        starts = np.cumsum([0] + list(counts.values()))[:-1]
        write_json(
            out_dir / "points.json",
            {"points": n, "partitions": {str(p): int(s) for p, s in zip(counts, starts, strict=True)}},
        )
        return {
            "mode": "hierarchical",
            "levels": ks,
            "levels_requested": [lv.n_clusters for lv in hcfg.levels],
            "clamped": ks != [lv.n_clusters for lv in hcfg.levels],
            "points": n,
            "target_size": hcfg.target_size,
            "selected": selected,
            "gpu": gpu,
            "workers": workers,
        }


class Assign(MapStep[ClusterConfig]):
    name = "assign"
    # Rows that are not alive come too: they get cluster -1 here, not nulls.
    alive_only = False

    def resources(self) -> Resources:
        return Resources(num_cpus=1, num_gpus=device_gpus(self.cfg.device))

    def batch_size(self) -> int:
        return self.cfg.assign_batch_size

    def setup(self) -> None:
        from curation.algorithms.kmeans import flat_index, use_gpu

        train = self.ctx.step_dir("train")
        self.hierarchical = self.cfg.mode == "hierarchical"
        if self.hierarchical:
            self.points = {part: _mapped(train / f"points.{part}.npy") for part in ("leaf", "similarity", "selected")}
            self.parents = [
                _mapped(train / f"level-{t}.parents.npy") for t in range(len(self.cfg.hierarchy.levels) - 1)
            ]
            self.starts = {int(p): s for p, s in read_json(train / "points.json")["partitions"].items()}
        else:
            centroids = np.load(train / "centroids.npy", allow_pickle=False)
            self.index = flat_index(centroids, gpu=self.grant.num_gpus > 0 and use_gpu(self.cfg.device))

    def open(self, partition: int, out) -> None:
        self.partition = partition
        self.assigned = 0
        if not self.hierarchical:
            _, self.x, _ = embeddings.partition_embeddings(self.ctx, partition)

    def process_batch(self, batch: pa.Table) -> pa.Table:
        emb_row = batch.column(embeddings.ROW_COLUMN).to_numpy(zero_copy_only=False)
        has = emb_row >= 0
        n = batch.num_rows
        cluster = np.full(n, -1, dtype=np.int64)
        similarity = np.full(n, np.nan, dtype=np.float32)
        self.assigned += int(has.sum())
        out = batch.select(tables.STATUS_COLUMNS)
        if not self.hierarchical:
            from curation.algorithms.kmeans import assign

            if has.any():
                cluster[has], similarity[has] = assign(self.x[emb_row[has]], index=self.index)
            return self._with(out, cluster, similarity, has)
        idx = self.starts[self.partition] + emb_row[has]
        cluster[has] = self.points["leaf"][idx]
        similarity[has] = self.points["similarity"][idx]
        selected = np.zeros(n, dtype=bool)
        selected[has] = self.points["selected"][idx]
        out = tables.drop(out, has & ~selected, STAGE, NOT_SELECTED, "balanced sampling: leaf quota filled")
        out = self._with(out, cluster, similarity, has)
        return out.append_column("cluster_path", self._paths(cluster, has)).append_column(
            "selected", pa.array(selected)
        )

    @staticmethod
    def _with(out: pa.Table, cluster: np.ndarray, similarity: np.ndarray, has: np.ndarray) -> pa.Table:
        out = out.append_column("cluster", pa.array(cluster, pa.int64()))
        return out.append_column("similarity", pa.array(similarity, pa.float32(), mask=~has))

    def _paths(self, cluster: np.ndarray, has: np.ndarray) -> pa.Array:
        cols = [np.where(has, cluster, 0)]
        for parent in self.parents:
            cols.append(np.asarray(parent)[cols[-1]])
        flat = np.stack(cols[::-1], axis=1).ravel()  # top level first, leaf last
        width = len(cols)
        offsets = pa.array(np.arange(0, len(cluster) * width + 1, width, dtype=np.int32))
        return pa.ListArray.from_arrays(offsets, pa.array(flat, pa.int64()), mask=pa.array(~has))

    def close(self) -> dict[str, Any]:
        return {"assigned": self.assigned}


class Sizes(GlobalStep[ClusterConfig]):
    name = "sizes"

    def run(self, out_dir: Path) -> dict[str, Any]:
        from curation.algorithms.kmeans import cluster_sizes

        train = self.ctx.step_dir("train")
        k = np.load(train / "centroids.npy", mmap_mode="r").shape[0]
        columns = ["cluster"] + (["selected"] if self.cfg.mode == "hierarchical" else [])
        table = self.ctx.read_table(STAGE, columns)
        leaf = table.column("cluster").to_numpy()
        sizes = [cluster_sizes(leaf, k)]
        levels = [np.zeros(k, dtype=np.int64)]
        extra: dict[str, Any] = {}
        if self.cfg.mode == "hierarchical":
            selected = table.column("selected").to_numpy(zero_copy_only=False)
            picked = [cluster_sizes(np.where(selected, leaf, -1), k)]
            for t in range(len(self.cfg.hierarchy.levels) - 1):
                parent = np.load(train / f"level-{t}.parents.npy", allow_pickle=False)
                k_up = np.load(train / f"level-{t + 1}.centroids.npy", mmap_mode="r").shape[0]
                sizes.append(np.bincount(parent, weights=sizes[-1], minlength=k_up).astype(np.int64))
                picked.append(np.bincount(parent, weights=picked[-1], minlength=k_up).astype(np.int64))
                levels.append(np.full(k_up, t + 1, dtype=np.int64))
            extra["selected"] = pa.array(np.concatenate(picked))
            extra_stats = {"selected": int(picked[0].sum()), "clusters_per_level": [len(s) for s in sizes]}
        else:
            extra_stats = {}
        ids = np.concatenate([np.arange(len(s)) for s in sizes])
        out = pa.table({"level": np.concatenate(levels), "cluster": ids, "size": np.concatenate(sizes), **extra})
        tables.write_parquet(out, out_dir / "sizes.parquet")
        empty = np.flatnonzero(sizes[0] == 0)
        if len(empty):
            log.warning("cluster: %d of %d clusters are empty", len(empty), k)
        nonempty = sizes[0][sizes[0] > 0]
        return {
            "k": int(k),
            "assigned": int(sizes[0].sum()),
            "empty_clusters": len(empty),
            "empty_cluster_ids": empty[:100].tolist(),
            "largest": int(sizes[0].max()),
            "smallest_nonempty": int(nonempty.min()) if len(nonempty) else 0,
            **extra_stats,
        }


@register
class ClusterStage(Stage):
    name = STAGE
    config_model = ClusterConfig
    inputs = ("embed",)
    steps = (Train, Assign, Sizes)
    table_step = "assign"

    @classmethod
    def check(cls, config: Any) -> None:
        cfg = config.cluster
        if cfg.mode == "hierarchical" and cfg.hierarchical is None:
            raise ConfigError("cluster.hierarchical: required when cluster.mode is hierarchical")
        if cfg.mode == "flat" and cfg.hierarchical is not None:
            raise ConfigError("cluster.hierarchical: given but cluster.mode is flat; set mode: hierarchical")


def _mapped(path: Path) -> np.ndarray:
    return np.load(path, mmap_mode="r", allow_pickle=False)
