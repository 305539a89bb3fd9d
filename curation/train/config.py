"""The trainer's typed config: one section per concern, DINOv2's defaults.

Defaults follow ``ssl_default_config.yaml`` with the centring of the ViT-L/g
recipes (Sinkhorn-Knopp). ``load_train_config`` reads an optional YAML file
(``config=PATH``), applies dotted ``key=value`` overrides and validates;
unknown keys fail naming the closest valid key.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError

from curation.config import Section, apply_overrides, explain, parse_overrides, read_yaml, resolve_pipeline_path
from curation.errors import ConfigError

Range = tuple[float, float]


class VitConfig(Section):
    patch_size: int = Field(14, ge=1, description="patch size in pixels (DINOv2's released models: 14)")
    drop_path_rate: float = Field(0.3, ge=0.0, lt=1.0, description="student stochastic depth (ViT-L/g: 0.4)")
    drop_path_uniform: bool = Field(True, description="same drop rate in every block (else linear from 0)")
    layerscale_init: float | None = Field(1e-5, description="LayerScale init (null: no LayerScale)")
    ffn: Literal["mlp", "swiglu"] | None = Field(None, description="FFN kind (null: the architecture's)")
    num_register_tokens: int = Field(0, ge=0, description="register tokens")
    embed_dim: int | None = Field(None, ge=8, description="override the architecture's width (tiny models)")
    depth: int | None = Field(None, ge=1, description="override the architecture's depth")
    num_heads: int | None = Field(None, ge=1, description="override the architecture's heads")


class HeadsConfig(Section):
    dino_prototypes: int = Field(65536, ge=2, description="K of the DINO head (ViT-L/g: 131072)")
    dino_bottleneck: int = Field(256, ge=2, description="DINO head bottleneck (ViT-L/g: 384)")
    ibot_prototypes: int = Field(65536, ge=2, description="K of the iBOT head (ViT-L/g: 131072)")
    ibot_bottleneck: int = Field(256, ge=2, description="iBOT head bottleneck")
    hidden_dim: int = Field(2048, ge=2, description="hidden width of the heads' 3-layer MLP")
    separate_ibot_head: bool = Field(False, description="untied iBOT head (ViT-L/g: true)")


class LossConfig(Section):
    dino_weight: float = Field(1.0, ge=0.0, description="weight of the DINO (CLS) loss")
    ibot_weight: float = Field(1.0, ge=0.0, description="weight of the iBOT (masked patch) loss")
    koleo_weight: float = Field(0.1, ge=0.0, description="weight of the KoLeo regulariser")
    centering: Literal["sinkhorn_knopp", "centering"] = Field(
        "sinkhorn_knopp", description="teacher target: Sinkhorn-Knopp, or DINO's EMA centring"
    )
    sinkhorn_iterations: int = Field(3, ge=1, description="Sinkhorn-Knopp iterations")
    center_momentum: float = Field(0.9, ge=0.0, le=1.0, description="EMA momentum of the centre")
    student_temp: float = Field(0.1, gt=0.0, description="student softmax temperature")
    teacher_temp: float = Field(0.07, gt=0.0, description="teacher temperature after warmup")
    warmup_teacher_temp: float = Field(0.04, gt=0.0, description="teacher temperature at iteration 0")
    warmup_teacher_temp_iterations: int = Field(37500, ge=0, description="linear teacher-temp warmup")


class CropsConfig(Section):
    global_size: int = Field(224, ge=1, description="global crop size in pixels")
    local_size: int | None = Field(None, ge=1, description="local crop size (null: 96 rounded up to the patch)")
    num_local: int = Field(8, ge=0, description="local crops per image")
    global_scale: Range = Field((0.32, 1.0), description="area range of global crops")
    local_scale: Range = Field((0.05, 0.32), description="area range of local crops")
    blur_probabilities: Literal["intended", "official"] | tuple[float, float, float] = Field(
        "intended",
        description="blur p for global 1 / global 2 / local: intended (1, 0.1, 0.5), official "
        "(0, 0.9, 0.5: what DINOv2's code does), or three numbers",
    )
    solarize_probability: float = Field(0.2, ge=0.0, le=1.0, description="solarise p on global crop 2")


class MaskingConfig(Section):
    probability: float = Field(0.5, ge=0.0, le=1.0, description="fraction of global crops masked")
    ratio_min: float = Field(0.1, ge=0.0, le=1.0, description="smallest mask ratio")
    ratio_max: float = Field(0.5, ge=0.0, le=1.0, description="largest mask ratio")
    min_patches: int = Field(4, ge=1, description="smallest block, in patches")
    min_aspect: float = Field(0.3, gt=0.0, le=1.0, description="block aspect ratio in [min, 1/min]")


class OptimConfig(Section):
    iterations: int = Field(125000, ge=1, description="iterations of the main phase")
    batch_size: int = Field(64, ge=1, description="images per rank per iteration")
    base_lr: float = Field(4e-3, gt=0.0, description="lr for a global batch of reference_batch")
    reference_batch: int = Field(1024, ge=1, description="lr = base_lr * sqrt(global batch / this)")
    min_lr: float = Field(1e-6, ge=0.0, description="lr at the end of the cosine")
    warmup_iterations: int = Field(12500, ge=0, description="linear lr warmup")
    weight_decay: float = Field(0.04, ge=0.0, description="weight decay at iteration 0")
    weight_decay_end: float = Field(0.4, ge=0.0, description="weight decay at the end (cosine)")
    momentum_teacher: float = Field(0.992, ge=0.0, le=1.0, description="teacher EMA momentum at 0 (ViT-L/g: 0.994)")
    final_momentum_teacher: float = Field(1.0, ge=0.0, le=1.0, description="teacher EMA momentum at the end")
    layerwise_decay: float = Field(0.9, gt=0.0, le=1.0, description="layer-wise lr decay (ViT-L/g: 1.0)")
    patch_embed_lr_mult: float = Field(0.2, ge=0.0, description="extra lr multiplier of the patch embedding")
    clip_grad: float = Field(3.0, gt=0.0, description="gradient-norm clip, per student module")
    freeze_last_layer_iterations: int = Field(1250, ge=0, description="heads' prototypes frozen this long")
    betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW betas")


class DataConfig(Section):
    num_workers: int = Field(8, ge=0, description="DataLoader workers per rank (0: in the training process)")
    shuffle_buffer: int = Field(1000, ge=0, description="samples in each reader's shuffle buffer")
    on_bad_shard: Literal["error", "skip"] = Field(
        "error", description="missing/unreadable/checksum-failing shard: stop, or skip and count"
    )
    verify_checksums: bool = Field(False, description="check each shard's sha256 before reading it")
    prefetch_factor: int = Field(2, ge=1, description="batches prefetched per worker")


class FsdpConfig(Section):
    param_dtype: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        "auto", description="compute dtype of parameters (auto: bf16 on GPU, fp32 on CPU)"
    )
    reduce_dtype: Literal["param", "bf16", "fp16", "fp32"] = Field(
        "param", description="gradient reduction dtype of the backbones (heads always reduce in fp32)"
    )
    reshard_after_forward: bool = Field(True, description="free gathered block weights after forward")


class CheckpointConfig(Section):
    every: int = Field(2500, ge=1, description="iterations between checkpoints (and one at the end)")
    keep: int = Field(3, ge=1, description="checkpoints kept (older ones are deleted)")
    resume: str = Field("auto", description="auto (latest in output_dir), none, or a checkpoint directory")


class HighresConfig(Section):
    iterations: int = Field(0, ge=0, description="iterations of the final high-resolution phase (0: none)")
    image_size: int = Field(518, ge=1, description="global crop size during that phase")
    local_size: int | None = Field(None, ge=1, description="local crop size during that phase (null: unchanged)")
    lr_scale: float = Field(0.1, gt=0.0, description="lr multiplier of that phase's compressed schedules")


class KnnConfig(Section):
    path: str | None = Field(None, description="labelled folder with train/ and val/ class subfolders")
    every: int = Field(0, ge=0, description="evaluate every N iterations (0: only at the end)")
    k: int = Field(20, ge=1, description="neighbours that vote")
    temperature: float = Field(0.07, gt=0.0, description="vote weight exp(similarity / T)")
    image_size: int = Field(224, ge=1, description="centre-crop size of evaluation images")
    batch_size: int = Field(64, ge=1, description="images per feature batch")


class DistillConfig(Section):
    enabled: bool = Field(False, description="distil a frozen teacher into the student (no masking, no drop path)")
    teacher_checkpoint: str | None = Field(None, description="trainer checkpoint directory of the teacher")


class TrainConfig(Section):
    manifest: str = Field(..., description="shard manifest (local path or fsspec URL)")
    output_dir: str = Field("runs/train", description="checkpoints, metrics.jsonl and the exported backbone")
    model: str = Field("vit_small", description="ViT architecture (vit_small ... vit_giant2)")
    seed: int = Field(0, description="seed of initialisation, data order, crops, masks, drop path")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: cuda when available")
    log_every: int = Field(10, ge=1, description="iterations between log lines")
    export: str | None = Field(
        None, description="backbone file written at the end (null: output_dir/backbone.safetensors)"
    )
    compile: bool = Field(False, description="torch.compile every transformer block (after FSDP sharding)")
    vit: VitConfig = Field(VitConfig(), description="the student/teacher backbone")
    heads: HeadsConfig = Field(HeadsConfig(), description="DINO and iBOT projection heads")
    loss: LossConfig = Field(LossConfig(), description="objective")
    crops: CropsConfig = Field(CropsConfig(), description="multi-crop augmentation")
    masking: MaskingConfig = Field(MaskingConfig(), description="iBOT masks of the student's global crops")
    optim: OptimConfig = Field(OptimConfig(), description="optimiser and schedules")
    data: DataConfig = Field(DataConfig(), description="reading the manifest's shards")
    fsdp: FsdpConfig = Field(FsdpConfig(), description="sharding and precision")
    checkpoint: CheckpointConfig = Field(
        CheckpointConfig(), description="resumable checkpoints under output_dir/checkpoints"
    )
    highres: HighresConfig = Field(
        HighresConfig(), description="final high-resolution phase (paper: 10k iterations at 518 px)"
    )
    knn: KnnConfig = Field(KnnConfig(), description="k-NN evaluation of the EMA backbone on a labelled folder")
    distill: DistillConfig = Field(DistillConfig(), description="distillation mode")

    @property
    def local_size(self) -> int:
        p = self.vit.patch_size
        return self.crops.local_size or math.ceil(96 / p) * p

    @property
    def total_iterations(self) -> int:
        return self.optim.iterations + self.highres.iterations


def check(cfg: TrainConfig) -> TrainConfig:
    """Constraints between keys, as ConfigError naming the key."""
    p = cfg.vit.patch_size
    sizes = {"crops.global_size": cfg.crops.global_size, "crops.local_size": cfg.local_size}
    if cfg.highres.iterations:
        sizes["highres.image_size"] = cfg.highres.image_size
        sizes["highres.local_size"] = cfg.highres.local_size or cfg.local_size
    for key, size in sizes.items():
        if size % p:
            raise ConfigError(f"{key}: {size} is not a multiple of vit.patch_size={p}")
    if cfg.masking.ratio_min > cfg.masking.ratio_max:
        raise ConfigError("masking.ratio_min: larger than masking.ratio_max")
    for key in ("global_scale", "local_scale"):
        low, high = getattr(cfg.crops, key)
        if not 0.0 < low <= high <= 1.0:
            raise ConfigError(f"crops.{key}: expected 0 < low <= high <= 1, got {[low, high]}")
    if cfg.distill.enabled and not cfg.distill.teacher_checkpoint:
        raise ConfigError("distill.teacher_checkpoint: required when distill.enabled is true")
    if cfg.checkpoint.resume not in ("auto", "none") and not Path(cfg.checkpoint.resume).is_dir():
        raise ConfigError(f"checkpoint.resume: {cfg.checkpoint.resume} is not a checkpoint directory")
    return cfg


def load_train_config(overrides: list[str]) -> TrainConfig:
    """``["config=train_demo", "optim.iterations=10", ...]`` -> TrainConfig.

    ``config`` names a YAML file (a path, or a file of ``pipelines/``) holding
    the base values; the other items override them."""
    items = parse_overrides(overrides)
    base: dict[str, Any] = {}
    if "config" in items:
        base = read_yaml(resolve_pipeline_path(str(items.pop("config"))))
    return validate_train_config(apply_overrides(base, items))


def validate_train_config(data: dict[str, Any]) -> TrainConfig:
    try:
        return check(TrainConfig.model_validate(data))
    except ValidationError as err:
        raise ConfigError(explain(err, TrainConfig)) from None
