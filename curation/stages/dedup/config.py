"""Config of the dedup stage: hashing, descriptor, self-dedup graph, relative dedup."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from curation.index_config import IndexConfig
from curation.section import RUNTIME, Section
from curation.sources import ImageSetConfig


class VariantsConfig(Section):
    enabled: bool = Field(True, description="each image also queries with its mirrored, cropped and trimmed forms")
    mirror: bool = Field(True, description="query with the horizontally flipped image")
    crops: list[float] = Field([0.8, 0.85, 0.9], description="kept side fractions of the crop variants")
    grid: int = Field(7, ge=1, le=9, description="crop positions per axis (1: centred only): grid^2 crops per scale")
    trim: bool = Field(True, description="query with the image without its uniform borders (undoes paddings)")
    rotations: list[float] = Field(
        [-10, -8, -6, -4, 4, 6, 8, 10],
        description="angles in degrees of the rotated variants (about the centre, "
        "corners black, as a copy rotated in place); their matches need hashing.min_correlation",
    )
    source_size: int = Field(64, ge=16, le=256, description="side of the grayscale image the variants are cut from")
    max_distance: int = Field(4, ge=0, le=64, description="variant codes this close to an image's code are duplicates")

    @field_validator("crops")
    @classmethod
    def _fractions(cls, crops: list[float]) -> list[float]:
        if any(not 0.25 <= c < 1 for c in crops):
            raise ValueError("crop fractions must be in [0.25, 1)")
        return crops

    @field_validator("rotations")
    @classmethod
    def _angles(cls, rotations: list[float]) -> list[float]:
        if any(not 0 < abs(a) <= 45 for a in rotations):
            raise ValueError("rotation angles must be non-zero and within 45 degrees")
        return rotations

    def spec(self):
        from curation.algorithms.variants import VariantSpec

        return VariantSpec(self.mirror, tuple(self.crops), self.grid, (), self.trim, tuple(self.rotations))


class HashingConfig(Section):
    method: Literal["pca", "phash"] = Field("pca", description="pca: PCA hash learned on the pool; phash: DCT pHash")
    thumb_size: int = Field(32, ge=8, le=64, description="side of the grayscale thumbnail hashed (phash: 32)")
    bits: int = Field(64, ge=8, le=256, multiple_of=8, description="code length in bits (phash: 64)")
    max_distance: int = Field(4, ge=0, le=64, description="codes at this Hamming distance or less are duplicates")
    min_correlation: float | None = Field(
        0.8,
        ge=-1,
        le=1,
        description="a pair within the radius (variant queries included) is a duplicate only when "
        "the two thumbnails that matched correlate at least this much, pixel by pixel (null: no check)",
    )
    fit_samples: int = Field(100_000, ge=1, description="pca: thumbnails sampled from the pool to fit the PCA")
    search: Literal["auto", "flat", "multihash"] = Field(
        "auto", description="Hamming search: flat (brute force) or multihash (multi-index hashing)"
    )
    flat_max: int = Field(100_000, ge=0, description="auto: brute-force search up to this many codes")
    variants: VariantsConfig = Field(VariantsConfig(), description="query-side geometric variants (no model needed)")


class DescriptorConfig(Section):
    weights: str | None = Field(
        None, description="SSCD TorchScript file or state dict (null: none; copy detection is then off)"
    )
    allow_random_weights: bool = Field(
        False, description="tests only: run copy detection with random weights (they merge distinct images)"
    )
    backbone: Literal["resnet50", "resnet18"] = Field(
        "resnet50", description="trunk of a state dict; resnet18 is a small demo/CPU trunk without official weights"
    )
    dims: int = Field(512, ge=8, description="descriptor dimension")
    gem_p: float = Field(3.0, gt=0, description="GeM pooling exponent")
    resize: Literal["square", "short_edge"] = Field(
        "square", description="square: skew to image_size x image_size; short_edge: keep the aspect ratio"
    )
    image_size: int = Field(320, ge=32, description="square side (SSCD: 320) or short edge (SSCD: 288)")
    draft: bool = Field(True, description="decode JPEGs at a reduced DCT scale when much larger than needed")
    batch_size: int = Field(64, ge=1, description="images per forward pass", json_schema_extra=RUNTIME)
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto: one GPU per worker when the cluster has GPUs, else CPU"
    )
    num_cpus: int = Field(1, ge=1, description="CPUs per worker; as many decode threads", json_schema_extra=RUNTIME)
    storage_dtype: Literal["float16", "float32"] = Field("float16", description="dtype of the descriptor .npy files")
    center: bool = Field(False, description="subtract the pool mean before L2 normalisation (SSCD's post-processing)")


class CopyConfig(Section):
    enabled: bool | None = Field(
        None, description="self-dedup by the descriptor graph (null: on when descriptor.weights is set)"
    )
    k: int = Field(64, ge=1, description="neighbours per image in the k-NN graph (capped at the pool size)")
    threshold: float = Field(0.6, ge=-1, le=1, description="edges need cosine similarity above this")
    index: IndexConfig = Field(
        IndexConfig(exact_max=200_000),
        description="k-NN search: flat (exact) up to exact_max survivors, else "
        "inverted lists (nlist, nprobe; any ivf kind) shared by the helpers, scores always exact",
    )


class RelativeConfig(Section):
    enabled: bool | None = Field(
        None,
        description="dedup against benchmarks: true by descriptor (needs weights); null: by descriptor "
        "with weights, else by hash; false: off",
    )
    benchmarks: list[ImageSetConfig] = Field([], description="benchmark image sets no pool image may duplicate")
    threshold: float = Field(0.45, ge=-1, le=1, description="edge similarity of the leak graph")
    k: int = Field(64, ge=1, description="neighbours per image, both directions, pool <-> benchmarks")


class GraphWorkers(Section):
    count: int | None = Field(
        None,
        ge=1,
        description="helpers of the graph step (null: one per worker node, or one per GPU of the worker nodes "
        "with num_gpus: 1); each holds pool/count images",
    )
    num_cpus: int = Field(1, ge=1, description="CPUs per helper (its Faiss threads)")
    num_gpus: int = Field(
        0,
        ge=0,
        le=1,
        description="GPUs per helper (0 or 1: one helper per GPU); with one, the k-NN searches and the shared "
        "quantizer's k-means run on it (needs faiss-gpu), else on the CPUs",
    )
    memory_gb: float = Field(0, ge=0, description="memory reserved per helper (0: unspecified); see `curate plan`")
    query_block: int = Field(
        8_000_000,
        ge=1,
        description="k-NN queries a helper searches at once: bounds its memory to ~(4 d + 12 k) bytes each; "
        "every block streams all partitions again (fewer, larger blocks: fewer reads)",
    )

    def helpers(self, nodes: int, gpus: int) -> int:
        """How many helpers start on worker ``nodes`` holding ``gpus`` GPUs in all: ``count``, else one per
        GPU when helpers take one (and there are GPUs), else one per node."""
        if self.count:
            return self.count
        return gpus if self.num_gpus and gpus else nodes


class GraphResources(Section):
    num_cpus: int = Field(1, ge=1, description="CPUs of the graph step (union-find, decisions)")
    num_gpus: int = Field(0, ge=0, description="GPUs of the graph step (benchmark descriptors)")
    memory_gb: float = Field(0, ge=0, description="memory reserved for the graph step (0: unspecified)")
    workers: GraphWorkers = Field(GraphWorkers(), description="the helpers that hold the pool, a range each")


class DedupConfig(Section):
    hashing: HashingConfig = Field(HashingConfig(), description="near-duplicate hashing")
    descriptor: DescriptorConfig = Field(DescriptorConfig(), description="SSCD copy-detection descriptor")
    copy_dedup: CopyConfig = Field(CopyConfig(), description="self-deduplication by the descriptor graph")
    relative: RelativeConfig = Field(RelativeConfig(), description="deduplication against benchmark sets")
    keep: Literal["largest", "first"] = Field(
        "largest", description="image kept per group: largest area then first in pool order, or first in pool order"
    )
    graph: GraphResources = Field(
        GraphResources(), description="resources of the global graph step", json_schema_extra=RUNTIME
    )

    @property
    def has_descriptor(self) -> bool:
        """Whether real (or, for tests, explicitly forced random) descriptor weights are given."""
        return self.descriptor.weights is not None or self.descriptor.allow_random_weights

    @property
    def copy_on(self) -> bool:
        return self.has_descriptor if self.copy_dedup.enabled is None else self.copy_dedup.enabled

    @property
    def relative_on(self) -> bool:
        on = self.relative.enabled
        return bool(self.relative.benchmarks) and (self.has_descriptor if on is None else on)

    @property
    def describes(self) -> bool:
        """Whether the features step computes descriptors at all."""
        return self.copy_on or self.relative_on
