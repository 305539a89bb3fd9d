"""Stage ``retrieve``: pick the pool images that curated query sets ask for.

Steps:

1. ``search`` (global): for every ``retrieve.datasets`` entry, in order,
   apply its mode (``as_is``: nothing to search, the shard stage copies the
   query set; ``sample``: k nearest alive pool images per query; ``cluster``:
   ``per_cluster`` alive pool images of every cluster holding more than
   ``min_queries`` queries), cap it, then resolve collisions over all
   entries. Writes ``selected/part-NNNNNN.parquet`` (one row per selected
   copy, for every pool partition) and ``summary.json``. The pool's
   embeddings stay in index shards (``retrieve.shards``, one worker each;
   :mod:`curation.stages.retrieve.pool`): no process holds more than its
   shard.
2. ``mark`` (map, the stage table): one row per pool sample; alive samples
   that were not selected get ``not_retrieved``.

The rules themselves are in :mod:`curation.algorithms.retrieval`.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field, model_validator

from curation.atomic import write_json
from curation.errors import ConfigError
from curation.index_config import IndexConfig
from curation.section import Section
from curation.sources import ImageSetConfig
from curation.stages.base import GlobalStep, MapStep, PartitionOutput, Resources, Stage
from curation.stages.registry import register
from curation.stages.retrieve import io as io
from curation.stages.retrieve import pool as rp

STAGE = "retrieve"
NOT_RETRIEVED = "not_retrieved"


class RetrievalDataset(Section):
    name: str = Field(..., pattern=r"^[A-Za-z0-9_]+$", description="unique name: the composition key in the manifest")
    source: str | ImageSetConfig = Field(
        ...,
        description="name of an embed.curated image set (its embeddings are the queries), "
        "or an inline image set (as_is only)",
    )
    mode: Literal["as_is", "sample", "cluster"] = Field(
        ..., description="as_is: the query images themselves; sample: k-NN per query; cluster: cluster rule"
    )
    k: int = Field(4, ge=1, description="sample: pool neighbours per query image")
    per_cluster: int = Field(10_000, ge=1, description="cluster: pool images taken per qualifying cluster (M)")
    min_queries: int = Field(
        3, ge=0, description="cluster: a cluster qualifies when it holds MORE than this many queries"
    )
    selection: Literal["random", "closest"] = Field(
        "random", description="cluster: which per_cluster images: seeded random, or closest to the centroid"
    )
    cap: int | None = Field(
        None, ge=0, description="most images this entry contributes before collisions (null: no cap)"
    )
    expected_clusters: int | None = Field(
        None, ge=0, description="cluster: qualifying clusters expected, used by `curate plan` only"
    )
    task: str | None = Field(None, description="task family shown by `curate plan` (classif., depth, ...)")
    title: str | None = Field(None, description="dataset / split shown by `curate plan`")


class ShardsConfig(Section):
    count: int | None = Field(
        None, ge=1, description="index shards of the pool (null: one per worker node); each holds pool/count vectors"
    )
    num_cpus: float = Field(1.0, gt=0, description="CPUs per shard (its Faiss threads)")
    num_gpus: float | Literal["auto"] = Field(
        "auto", description="GPUs per shard; auto: one when the cluster has GPUs (the index goes on them)"
    )
    memory_gb: float = Field(0, ge=0, description="memory reserved per shard (0: unspecified); see `curate plan`")


class RetrieveConfig(Section):
    datasets: list[RetrievalDataset] = Field(
        ..., min_length=1, description="query datasets, in order; earlier entries win similarity ties"
    )
    collisions: Literal["best", "keep_duplicates"] = Field(
        "best",
        description="an image hit several times: best keeps the highest-similarity hit; "
        "keep_duplicates keeps every hit (the counts of the paper's Table 15)",
    )
    index: IndexConfig = Field(IndexConfig(), description="Faiss index of the pool for sample mode")
    shards: ShardsConfig = Field(ShardsConfig(), description="the pool index split over workers (see docs)")

    @model_validator(mode="after")
    def _unique_names(self) -> RetrieveConfig:
        names = [d.name for d in self.datasets]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"dataset names must be unique; repeated: {twice}")
        return self


def resolve_source(config: Any, entry: RetrievalDataset, key: str) -> ImageSetConfig:
    """The image set of an entry: inline, or found by name in ``embed.curated``."""
    if isinstance(entry.source, ImageSetConfig):
        return entry.source
    curated = io.embedded_sets(config)
    if entry.source not in curated:
        import difflib

        close = difflib.get_close_matches(entry.source, list(curated), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else f"; embed.curated has {sorted(curated)}"
        raise ConfigError(f"{key}.source: '{entry.source}' is not an embed.curated image set{hint}")
    return curated[entry.source]


def check_config(config: Any) -> None:
    """Sources resolve, searched sets are embedded, paths are filled in and exist."""
    from curation.sources import check_exists

    as_is: dict[str, str] = {}
    for i, entry in enumerate(config.retrieve.datasets):
        key = f"retrieve.datasets.{i}"
        source = resolve_source(config, entry, key)
        if entry.mode != "as_is" and isinstance(entry.source, ImageSetConfig):
            raise ConfigError(f"{key}.source: {entry.mode} mode needs query embeddings: name an embed.curated set")
        if entry.mode == "as_is":
            if source.name in as_is:
                raise ConfigError(f"{key}.source: '{source.name}' is already copied as is by '{as_is[source.name]}'")
            as_is[source.name] = entry.name
        # The path to fix lives where the image set is defined.
        where = (
            f"{key}.source"
            if isinstance(entry.source, ImageSetConfig)
            else f"embed.curated.{list(io.embedded_sets(config)).index(source.name)}"
        )
        if io.is_placeholder(source.path):
            raise ConfigError(
                f"{where}.path: '{source.path}' is a placeholder: set it to the location of "
                f"'{source.name}' (used by {key})"
            )
        check_exists(source, where)


class Search(GlobalStep[RetrieveConfig]):
    """All retrievals and the collision resolution; the pool stays in the index shards."""

    name = "search"

    def shard_resources(self) -> Resources:
        s = self.cfg.shards
        return Resources(
            num_cpus=s.num_cpus, num_gpus=s.num_gpus, memory=int(s.memory_gb * 2**30), key="retrieve.shards.memory_gb"
        )

    def requests(self) -> list[tuple[str, Resources]]:
        return [*super().requests(), ("search shards", self.shard_resources())]

    def run(self, out_dir: Path) -> dict[str, Any]:
        searched = any(e.mode == "sample" for e in self.cfg.datasets)
        pool = rp.start_shards(self.ctx, self.workers, self.cfg.shards.count, self.shard_resources(), searched)
        try:
            stats = self._search(out_dir, pool)
            work = pool.group.call("stats", [()] * len(pool.index.sizes))
            stats["shards"] = [{**info, **w} for info, w in zip(pool.group.info(), work, strict=False)]
        finally:
            pool.group.stop()
        return stats

    def _search(self, out_dir: Path, pool: rp.ShardedPool) -> dict[str, Any]:
        from curation.algorithms import retrieval as rt

        centroids = io.load_centroids(self.ctx)
        parts, queries = [], []
        per_dataset: list[dict[str, Any]] = []
        for i, entry in enumerate(self.cfg.datasets):
            self.report_progress(i, len(self.cfg.datasets) + 1)  # one unit per entry, one for the write
            if entry.mode == "as_is":
                queries.append(np.array([], dtype=str))
                per_dataset.append({"name": entry.name, "mode": "as_is"})
                continue
            source = resolve_source(self.ctx.config, entry, f"retrieve.datasets.{i}")
            keys, x = io.load_queries(self.ctx, source.name)
            hits, stats = self._retrieve(i, entry, x, pool, centroids)
            parts.append(hits)
            queries.append(keys)
            per_dataset.append({"name": entry.name, "mode": entry.mode, "queries": len(keys), **stats})
        resolved = rt.resolve_collisions(rt.Hits.concat(parts), self.cfg.collisions, len(self.cfg.datasets))
        described = rp.describe(self.ctx, pool, resolved.hits.pool)
        selected = io.selection_table(resolved, described, queries, self.cfg.datasets, self._query_sets())
        self.report_progress(len(self.cfg.datasets), len(self.cfg.datasets) + 1)
        io.write_selection(out_dir, selected, self.ctx.partitions(io.CLUSTER_STAGE))
        for row, kept in zip(per_dataset, resolved.stats["kept_per_dataset"], strict=False):
            row["selected"] = kept if row["mode"] != "as_is" else None
        summary = {"datasets": per_dataset, "collisions": resolved.stats, "pool_candidates": pool.size}
        write_json(out_dir / "summary.json", summary)
        return {"selected": int(selected.num_rows), "pool_candidates": pool.size}

    def _query_sets(self) -> list[str]:
        return [
            resolve_source(self.ctx.config, e, f"retrieve.datasets.{i}").name for i, e in enumerate(self.cfg.datasets)
        ]

    def _retrieve(self, i: int, entry: RetrievalDataset, x: np.ndarray, pool: rp.ShardedPool, centroids: np.ndarray):
        from curation.algorithms import retrieval as rt

        if entry.mode == "sample":
            scores, ids = pool.index.search(x, entry.k)
            hits = rt.sample_hits(scores, ids, i)
            capped = rt.cap_hits(hits, entry.cap, -hits.similarity)
            return capped, {"hits": len(hits), "after_cap": len(capped)}
        rng = np.random.default_rng([self.ctx.seed, zlib.crc32(entry.name.encode())])
        query_clusters = io.assign(centroids, x)
        qualifying = rt.qualifying_clusters(query_clusters, entry.min_queries)
        hits = rp.cluster_hits(self.ctx, pool, qualifying, entry.selection, rng, entry.per_cluster, i)
        # Ties in rank under the cap go to clusters in a seeded random order.
        cluster_order = rng.permutation(max(centroids.shape[0], 1))
        capped = rt.cap_hits(hits, entry.cap, cluster_order[np.maximum(hits.cluster, 0)])
        capped = rp.attribute(pool, capped, x, query_clusters)
        return capped, {"qualifying_clusters": int(qualifying.size), "hits": len(hits), "after_cap": len(capped)}


class Mark(MapStep[RetrieveConfig]):
    """The stage table: selected pool samples stay alive, the rest are dropped."""

    name = "mark"

    def open(self, partition: int, out: PartitionOutput) -> None:
        selected = io.read_selection(self.ctx.step_dir(Search.name), partition)
        self.selected = io.first_copies(selected).select(["key", *io.MARK_COLUMNS])

    def process_batch(self, batch: pa.Table) -> pa.Table:
        return io.join_status(batch, self.selected, io.MARK_COLUMNS, STAGE, NOT_RETRIEVED, present="key")


@register
class RetrieveStage(Stage):
    name = STAGE
    config_model = RetrieveConfig
    inputs = ("cluster",)
    steps = (Search, Mark)
    table_step = "mark"

    @classmethod
    def check(cls, config: Any) -> None:
        if getattr(config, STAGE, None) is not None:
            check_config(config)
