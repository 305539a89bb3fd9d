"""The ``embed`` section: the embedding model and how the pool and the curated sets are embedded."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from curation.preprocess import IMAGENET_MEAN, IMAGENET_STD
from curation.section import RUNTIME, Section
from curation.sources import ImageSetConfig

# The kinds of curation.models.checkpoints.load_model (not imported here: it imports torch).
MODEL_KINDS = Literal["dinov2", "dino", "ibot", "timm", "open_clip", "torchscript", "curation", "random"]


class ModelConfig(Section):
    kind: MODEL_KINDS = Field(..., description="checkpoint format; random = untrained weights (demos, tests)")
    path: str | None = Field(None, description="local checkpoint file (every kind but random)")
    arch: str | None = Field(None, description="architecture: vit_huge16, ... (timm/open_clip: their name)")
    image_size: int = Field(224, ge=16, description="side of the centre crop fed to the model")
    resize_size: int | None = Field(None, ge=16, description="short side before the crop (null: size*256/224)")
    interpolation: Literal["bicubic", "bilinear", "nearest", "lanczos"] = Field(
        "bicubic", description="resampling filter of the resize"
    )
    mean: tuple[float, float, float] = Field(IMAGENET_MEAN, description="per-channel mean (RGB, 0-1 scale)")
    std: tuple[float, float, float] = Field(IMAGENET_STD, description="per-channel std (RGB, 0-1 scale)")
    options: dict[str, Any] = Field(
        default_factory=dict, description="extra load_model arguments (ViT overrides, seed of random weights)"
    )


class EmbedConfig(Section):
    model: ModelConfig = Field(..., description="the embedding model")
    batch_size: int = Field(64, ge=1, description="images per forward pass", json_schema_extra=RUNTIME)
    device: Literal["auto", "cuda", "cpu"] = Field("auto", description="auto: one GPU per worker when present")
    precision: Literal["bf16", "fp16", "fp32"] = Field("bf16", description="autocast dtype on GPU (CPU: fp32)")
    storage_dtype: Literal["float16", "float32"] = Field("float16", description="dtype of the .npy files")
    decode_threads: int = Field(
        0,
        ge=0,
        description="threads per worker reading and decoding images (0: two per CPU of num_cpus)",
        json_schema_extra=RUNTIME,
    )
    num_cpus: float = Field(1.0, gt=0, description="CPUs reserved per worker", json_schema_extra=RUNTIME)
    draft: bool = Field(False, description="JPEG draft decoding (faster, pixels differ slightly)")
    curated: list[ImageSetConfig] = Field(default_factory=list, description="curated datasets to embed too")
    curated_partition_size: int = Field(
        10_000, ge=1, description="images per partition of a curated set (the unit of work of curated_parts)"
    )
