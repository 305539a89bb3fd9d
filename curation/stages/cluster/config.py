"""The ``cluster`` section: flat k-means (DINOv2) or hierarchical k-means with balanced sampling."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from curation.errors import ConfigError
from curation.section import RUNTIME, Section


class LevelConfig(Section):
    n_clusters: int = Field(..., ge=1, description="clusters at this level")
    n_resampling_steps: int = Field(0, ge=0, description="resampling rounds after the first k-means")
    sample_size: int = Field(1, ge=1, description="points per cluster kept in each resampling round")
    init: Literal["kmeans++", "random"] = Field(
        "kmeans++", description="seeding: kmeans++ (up to a few thousand clusters) or random (any k)"
    )


class HierarchicalConfig(Section):
    levels: list[LevelConfig] = Field(..., min_length=1, description="levels, finest (most clusters) first")
    sampling_strategy: Literal["closest", "random"] = Field(
        "closest", description="which points a leaf gives: closest to its centroid, or random"
    )
    target_size: int = Field(..., ge=1, description="samples to select in total")

    @model_validator(mode="after")
    def _decreasing(self) -> HierarchicalConfig:
        for t in range(1, len(self.levels)):
            if self.levels[t].n_clusters > self.levels[t - 1].n_clusters:
                raise ValueError(
                    f"levels.{t}.n_clusters ({self.levels[t].n_clusters}) exceeds levels.{t - 1}.n_clusters "
                    f"({self.levels[t - 1].n_clusters}): each level clusters the centroids of the one before"
                )
        return self


class TrainConfig(Section):
    workers: int | None = Field(
        None,
        ge=1,
        description="k-means workers, each holding 1/workers of the training sample (flat) or of "
        "the pool (hierarchical) (null: one per worker node)",
    )
    num_cpus: float | None = Field(
        None,
        gt=0,
        description="CPUs per training worker, its Faiss threads (null: every CPU of a node, and "
        "every GPU of it unless device is cpu)",
    )
    memory_gb: float = Field(0.0, ge=0, description="memory reserved per training worker, GiB (0: none)")


class ClusterConfig(Section):
    mode: Literal["flat", "hierarchical"] = Field("flat", description="flat k-means, or hierarchical + sampling")
    k: int = Field(100_000, ge=1, description="flat mode: number of clusters")
    n_iter: int = Field(20, ge=1, description="k-means iterations (every k-means and resampling round)")
    init: Literal["random", "kmeans++"] = Field("random", description="flat mode: centroid seeding")
    n_redo: int = Field(1, ge=1, description="flat mode: k-means runs, the best objective is kept")
    max_points_per_centroid: int = Field(
        256, ge=1, description="training sample cap: at most k * this many embeddings train k-means"
    )
    clamp_k: bool = Field(
        True, description="fewer embedded samples than clusters: true lowers k to the pool size, false fails"
    )
    device: Literal["auto", "cuda", "cpu"] = Field("auto", description="Faiss on GPU: auto uses one if present")
    assign_batch_size: int = Field(65536, ge=1, description="rows per assignment batch", json_schema_extra=RUNTIME)
    hierarchical: HierarchicalConfig | None = Field(None, description="mode: hierarchical settings")
    train: TrainConfig = Field(TrainConfig(), description="the workers k-means runs on (see docs)")

    @property
    def hierarchy(self) -> HierarchicalConfig:
        """``hierarchical``, which hierarchical mode requires (:meth:`ClusterStage.check`)."""
        if self.hierarchical is None:
            raise ConfigError("cluster.hierarchical: required when cluster.mode is hierarchical")
        return self.hierarchical


def clamp_levels(wanted: list[int], n: int, clamp: bool, key: str) -> list[int]:
    """Cluster counts per level, lowered to fit ``n`` points when ``clamp``; else ConfigError."""
    if wanted[0] > n and not clamp:
        raise ConfigError(
            f"{key}: {wanted[0]} clusters requested but only {n} samples are embedded; "
            f"lower {key} or set cluster.clamp_k: true"
        )
    out: list[int] = []
    for k in wanted:
        out.append(min(k, out[-1] if out else n))
    return out
