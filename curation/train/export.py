"""Export of the trained backbone in the format the embed stage loads
(``curation.models.checkpoints.save_backbone``; ``load_model("curation", path)``).

The exported network is the EMA model: the teacher after SSL training, the
student's EMA after distillation. ``export_checkpoint`` does the same from a
checkpoint directory, without a training job.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, cast

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

if TYPE_CHECKING:
    from curation.models.vit import VisionTransformer

log = logging.getLogger(__name__)


def export_path(cfg) -> Path:
    return Path(cfg.export) if cfg.export else Path(cfg.output_dir) / "backbone.safetensors"


def export_backbone(cfg, backbone: nn.Module, is_main: bool) -> Path:
    """Collective: gathers the full (unsharded) backbone; rank 0 writes it."""
    from curation.models.checkpoints import save_backbone

    state = get_model_state_dict(backbone, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    path = export_path(cfg)
    if is_main:
        vit = cast("VisionTransformer", backbone)  # the ModuleDict's backbone
        save_backbone(vit, path, config_dict=vit.config, state_dict=cast("dict[str, torch.Tensor]", state))
        log.info("exported backbone: %s", path)
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
    return path


def export_checkpoint(checkpoint_dir: str | Path, out: str | Path) -> Path:
    """Write the EMA backbone of a trainer checkpoint directory (one process, CPU)."""
    from curation.models.checkpoints import save_backbone
    from curation.train.checkpoint import load_ema_model

    parts, _ = load_ema_model(checkpoint_dir)
    save_backbone(cast("VisionTransformer", parts["backbone"]), Path(out))
    return Path(out)
