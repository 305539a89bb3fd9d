"""Student and teacher, the step's losses and the teacher's EMA update
(DINOv2's ``ssl_meta_arch.py``).

``student`` and ``teacher`` are ModuleDicts with the same structure: a ViT
``backbone``, a ``dino_head`` and, when untied, an ``ibot_head``. The teacher
starts as a copy of the student, has no stochastic depth and is only ever
updated by EMA. One step (:meth:`SSLMetaArch.forward_backward`):

1. teacher on the two unmasked global crops -> CLS and patch targets
   (Sinkhorn-Knopp or centred softmax at the teacher temperature);
2. student on all crops in one packed pass, global crops masked;
3. DINO loss over the cross-view (teacher, student) crop pairs, iBOT loss on
   the masked patches, KoLeo on each global crop's CLS tokens;
4. backward of the weighted sum.
"""

from __future__ import annotations

import copy
from typing import cast

import torch
from torch import nn

from curation.models.vit import VisionTransformer, build_vit
from curation.train.config import TrainConfig
from curation.train.data.augmentations import normalize
from curation.train.fsdp import reshard
from curation.train.heads import DINOHead
from curation.train.losses.centering import Centering, sinkhorn_knopp
from curation.train.losses.dino import dino_loss
from curation.train.losses.ibot import ibot_loss, mask_weights
from curation.train.losses.koleo import koleo_loss


def build_backbone(cfg: TrainConfig, drop_path_rate: float) -> VisionTransformer:
    vit = cfg.vit
    overrides = {
        "patch_size": vit.patch_size,
        "img_size": cfg.crops.global_size,
        "drop_path_rate": drop_path_rate,
        "drop_path_uniform": vit.drop_path_uniform,
        "layerscale_init": vit.layerscale_init,
        "num_register_tokens": vit.num_register_tokens,
    }
    for key in ("ffn", "embed_dim", "depth", "num_heads"):
        if getattr(vit, key) is not None:
            overrides[key] = getattr(vit, key)
    return build_vit(cfg.model, **overrides)


def build_student(cfg: TrainConfig, drop_path_rate: float | None = None) -> nn.ModuleDict:
    """backbone + dino_head (+ ibot_head when untied)."""
    rate = cfg.vit.drop_path_rate if drop_path_rate is None else drop_path_rate
    backbone = build_backbone(cfg, rate)
    h = cfg.heads
    parts: dict[str, nn.Module] = {
        "backbone": backbone,
        "dino_head": DINOHead(backbone.embed_dim, h.dino_prototypes, h.hidden_dim, h.dino_bottleneck),
    }
    if h.separate_ibot_head:
        parts["ibot_head"] = DINOHead(backbone.embed_dim, h.ibot_prototypes, h.hidden_dim, h.ibot_bottleneck)
    return nn.ModuleDict(parts)


def teacher_copy(student: nn.ModuleDict) -> nn.ModuleDict:
    """The student's twin without stochastic depth, frozen (EMA-updated only)."""
    teacher = copy.deepcopy(student)
    for block in cast(VisionTransformer, teacher["backbone"]).blocks:
        block.drop_path = 0.0  # type: ignore[assignment]  # torch types __setattr__ for tensors and modules
    teacher.requires_grad_(False)
    return teacher.eval()


class SSLMetaArch(nn.Module):
    """DINOv2's objective. ``ema_target`` is the module that ``update_teacher``
    moves towards the student and that is exported at the end."""

    mask_student = True  # iBOT on masked patches (False in distillation: all patches)
    frozen_prefixes: tuple[str, ...] = ()  # state-dict prefixes that checkpoints leave out

    def __init__(self, cfg: TrainConfig, student: nn.ModuleDict | None = None, teacher: nn.ModuleDict | None = None):
        super().__init__()
        self.cfg = cfg
        self.student = student if student is not None else build_student(cfg)
        self.teacher = teacher if teacher is not None else teacher_copy(self.student)
        if cfg.loss.centering == "centering":
            self.dino_center = Centering(cfg.heads.dino_prototypes, cfg.loss.center_momentum)
            ibot_k = cfg.heads.ibot_prototypes if cfg.heads.separate_ibot_head else cfg.heads.dino_prototypes
            self.ibot_center = Centering(ibot_k, cfg.loss.center_momentum)

    @property
    def ema_target(self) -> nn.ModuleDict:
        return self.teacher

    def train(self, mode: bool = True) -> SSLMetaArch:
        super().train(mode)
        self.teacher.eval()  # the teacher never trains
        return self

    def _heads(
        self, module: nn.ModuleDict, cls: torch.Tensor, patches: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """DINO logits of cls [n, D] and iBOT logits of patches [m, D]; one call if tied."""
        if "ibot_head" in module:
            return module["dino_head"](cls), module["ibot_head"](patches)
        logits = module["dino_head"](torch.cat([cls, patches]))
        return logits[: len(cls)], logits[len(cls) :]

    def _targets(self, logits: torch.Tensor, temperature: float, center: str) -> torch.Tensor:
        loss = self.cfg.loss
        if loss.centering == "sinkhorn_knopp":
            return sinkhorn_knopp(logits, temperature, loss.sinkhorn_iterations)
        centering: Centering = getattr(self, center)
        probs = centering.softmax(logits, temperature)
        centering.update(logits)
        return probs

    @torch.no_grad()
    def teacher_targets(
        self, global_crops: torch.Tensor, patch_index: torch.Tensor, temperature: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Targets of the CLS tokens [2B, K] and of the patches at patch_index
        (into the flattened [2B * N] patch tokens) -> [M, K]."""
        out = self.teacher["backbone"](global_crops, is_training=True)
        patches = out["x_norm_patchtokens"].flatten(0, 1).index_select(0, patch_index)
        cls_logits, patch_logits = self._heads(self.teacher, out["x_norm_clstoken"], patches)
        reshard(self.teacher)
        return self._targets(cls_logits, temperature, "dino_center"), self._targets(
            patch_logits, temperature, "ibot_center"
        )

    def forward_backward(self, batch: dict[str, torch.Tensor], teacher_temp: float, scaler=None) -> dict[str, float]:
        """One step's forward and backward; returns the loss terms (floats).
        ``scaler``: a gradient scaler (fp16), which scales the loss before backward."""
        device = next(self.student.parameters()).device
        global_crops = normalize(batch["global_crops"].to(device, non_blocking=True))
        local_crops = normalize(batch["local_crops"].to(device, non_blocking=True))
        masks = batch["masks"]
        num_global = 2
        num_images = len(global_crops) // num_global
        # Patch selection is computed on the host: boolean indexing on the GPU would sync.
        patch_mask = masks if self.mask_student else torch.ones_like(masks)
        patch_index = patch_mask.flatten().nonzero().squeeze(1).to(device, non_blocking=True)
        weights = mask_weights(patch_mask).to(device, non_blocking=True)

        dino_targets, ibot_targets = self.teacher_targets(global_crops, patch_index, teacher_temp)

        crops, crop_masks = [global_crops], [masks.to(device, non_blocking=True) if self.mask_student else None]
        if len(local_crops):
            crops, crop_masks = crops + [local_crops], crop_masks + [None]
        outs = self.student["backbone"](crops, masks=crop_masks, is_training=True)
        global_cls = outs[0]["x_norm_clstoken"]
        all_cls = torch.cat([o["x_norm_clstoken"] for o in outs])
        patches = outs[0]["x_norm_patchtokens"].flatten(0, 1).index_select(0, patch_index)
        cls_logits, patch_logits = self._heads(self.student, all_cls, patches)

        loss_cfg = self.cfg.loss
        dino, terms = dino_loss(
            cls_logits.view(-1, num_images, cls_logits.shape[-1]),
            dino_targets.view(num_global, num_images, -1),
            loss_cfg.student_temp,
        )
        ibot = ibot_loss(patch_logits, ibot_targets, weights, len(global_crops), loss_cfg.student_temp)
        koleo = (
            cast(torch.Tensor, sum(koleo_loss(chunk) for chunk in global_cls.chunk(num_global)))  # not empty: no 0
            if num_images > 1
            else global_cls.new_zeros(())
        )
        total = loss_cfg.dino_weight * dino + loss_cfg.ibot_weight * ibot + loss_cfg.koleo_weight * koleo
        (scaler.scale(total) if scaler is not None else total).backward()
        terms.update(dino=dino, ibot=ibot, koleo=koleo, total=total)
        values = torch.stack([v.detach().float() for v in terms.values()]).tolist()  # one device sync
        return dict(zip(terms, values, strict=False))

    @torch.no_grad()
    def update_teacher(self, momentum: float) -> None:
        """ema = momentum * ema + (1 - momentum) * student, on local shards."""
        reshard(self.ema_target)
        ema = [_local(p) for p in self.ema_target.parameters()]
        student = [_local(p) for p in self.student.parameters()]
        torch._foreach_mul_(ema, momentum)
        torch._foreach_add_(ema, student, alpha=1.0 - momentum)


def _local(param: torch.Tensor) -> torch.Tensor:
    """A parameter's local shard (DTensor under FSDP) as a plain tensor."""
    return param.to_local() if hasattr(param, "to_local") else param.data
