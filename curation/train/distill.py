"""Distillation mode (DINOv2 §5 "Model distillation"; not in the public code).

The same loop and losses with these changes:

- the teacher (backbone + heads) is a frozen model read from a trainer
  checkpoint directory, with that checkpoint's architecture and heads;
- the student has no stochastic depth and sees no masks;
- iBOT compares all patch tokens of the two global crops (the maintainers'
  reading of "iBOT loss on the two global crops", dinov2 issue #176);
- a spare EMA of the student (``student_ema``) is kept and exported.

Checkpoints leave the frozen teacher out; it is read again on resume.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException
from torch import nn

from curation.atomic import read_json
from curation.errors import CheckpointError, ConfigError
from curation.train.checkpoint import STATE_FILE
from curation.train.config import TrainConfig, validate_train_config
from curation.train.meta_arch import SSLMetaArch, build_student, teacher_copy

log = logging.getLogger(__name__)


def load_frozen_teacher(checkpoint_dir: str | Path) -> tuple[nn.ModuleDict, TrainConfig]:
    """The EMA teacher (backbone + heads) of a trainer checkpoint, and its config."""
    checkpoint_dir = Path(checkpoint_dir)
    if not (checkpoint_dir / STATE_FILE).is_file():
        raise CheckpointError(f"distill.teacher_checkpoint: {checkpoint_dir} is not a complete trainer checkpoint")
    teacher_cfg = validate_train_config(read_json(checkpoint_dir / STATE_FILE)["config"])
    parts = build_student(teacher_cfg, drop_path_rate=0.0)
    prefix = "student_ema." if teacher_cfg.distill.enabled else "teacher."
    state = {"model": {prefix + k: v for k, v in parts.state_dict().items()}}
    try:  # DCP fills the given tensors in place, resharding from any world size
        dcp.load(state, checkpoint_id=str(checkpoint_dir))
    except (Exception, CheckpointException) as err:  # DCP's error is a BaseException
        raise CheckpointError(f"cannot read the teacher from {checkpoint_dir}: {err}") from err
    parts.requires_grad_(False)
    return parts.eval(), teacher_cfg


class DistillMetaArch(SSLMetaArch):
    mask_student = False
    frozen_prefixes = ("teacher.",)

    def __init__(self, cfg: TrainConfig, teacher: nn.ModuleDict):
        student = build_student(cfg, drop_path_rate=0.0)
        super().__init__(cfg, student=student, teacher=teacher)
        self.student_ema = teacher_copy(self.student)

    @property
    def ema_target(self) -> nn.ModuleDict:
        return self.student_ema

    def train(self, mode: bool = True) -> "DistillMetaArch":
        super().train(mode)
        self.student_ema.eval()
        return self


def build_meta_arch(cfg: TrainConfig) -> SSLMetaArch:
    """The SSL meta-architecture, or the distillation one when distill.enabled."""
    if not cfg.distill.enabled:
        return SSLMetaArch(cfg)
    teacher, teacher_cfg = load_frozen_teacher(cfg.distill.teacher_checkpoint)
    if teacher_cfg.vit.patch_size != cfg.vit.patch_size:
        raise ConfigError(
            f"vit.patch_size: {cfg.vit.patch_size}, but the teacher's is {teacher_cfg.vit.patch_size}; "
            "iBOT compares patch tokens one to one"
        )
    if cfg.heads != teacher_cfg.heads:
        log.info("distillation: student heads take the teacher's settings %s", teacher_cfg.heads.model_dump())
        cfg = cfg.model_copy(update={"heads": teacher_cfg.heads})
    log.info("distilling %s (%s) into %s", cfg.distill.teacher_checkpoint, teacher_cfg.model, cfg.model)
    return DistillMetaArch(cfg, teacher)
