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

from torch import nn

from curation.errors import ConfigError
from curation.train.checkpoint import load_ema_model
from curation.train.config import TrainConfig
from curation.train.meta_arch import SSLMetaArch, build_student, teacher_copy

log = logging.getLogger(__name__)


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

    def train(self, mode: bool = True) -> DistillMetaArch:
        super().train(mode)
        self.student_ema.eval()
        return self


def build_meta_arch(cfg: TrainConfig) -> SSLMetaArch:
    """The SSL meta-architecture, or the distillation one when distill.enabled."""
    if not cfg.distill.enabled:
        return SSLMetaArch(cfg)
    assert cfg.distill.teacher_checkpoint is not None  # the config requires it when distill.enabled
    teacher, teacher_cfg = load_ema_model(cfg.distill.teacher_checkpoint)
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
