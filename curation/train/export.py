"""Export of the trained backbone in the format the embed stage loads
(``curation.models.checkpoints.save_backbone``; ``load_model("curation", path)``).

The exported network is the EMA model: the teacher after SSL training, the
student's EMA after distillation. ``export_checkpoint`` does the same from a
checkpoint directory, without a training job.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

from curation.errors import CheckpointError

log = logging.getLogger(__name__)


def export_path(cfg) -> Path:
    return Path(cfg.export) if cfg.export else Path(cfg.output_dir) / "backbone.safetensors"


def export_backbone(cfg, backbone: nn.Module, is_main: bool) -> Path:
    """Collective: gathers the full (unsharded) backbone; rank 0 writes it."""
    from curation.models.checkpoints import save_backbone

    state = get_model_state_dict(backbone, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    path = export_path(cfg)
    if is_main:
        save_backbone(backbone, path, config_dict=backbone.config, state_dict=state)
        log.info("exported backbone: %s", path)
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
    return path


def export_checkpoint(checkpoint_dir: str | Path, out: str | Path) -> Path:
    """Write the EMA backbone of a trainer checkpoint directory (one process, CPU)."""
    import torch.distributed.checkpoint as dcp

    from curation.atomic import read_json
    from curation.models.checkpoints import save_backbone
    from curation.train.checkpoint import STATE_FILE
    from curation.train.config import validate_train_config
    from curation.train.meta_arch import build_backbone

    checkpoint_dir = Path(checkpoint_dir)
    if not (checkpoint_dir / STATE_FILE).is_file():
        raise CheckpointError(f"{checkpoint_dir} is not a complete trainer checkpoint")
    cfg = validate_train_config(read_json(checkpoint_dir / STATE_FILE)["config"])
    backbone = build_backbone(cfg, drop_path_rate=0.0)
    prefix = "student_ema.backbone." if cfg.distill.enabled else "teacher.backbone."
    state = {"model": {prefix + k: v for k, v in backbone.state_dict().items()}}
    dcp.load(state, checkpoint_id=str(checkpoint_dir), no_dist=True)
    backbone.load_state_dict({k[len(prefix) :]: v for k, v in state["model"].items()})
    save_backbone(backbone, Path(out))
    return Path(out)
