"""Optimiser parameter groups (``utils/param_groups.py``).

Each parameter gets an lr multiplier (layer-wise decay x the patch-embedding
multiplier), a weight-decay multiplier (0 for biases, norms and LayerScale
gammas) and a flag for the heads' prototype layer, whose lr follows its own
schedule (zero while it is frozen). Parameters with equal settings share a
group; the loop sets each group's lr and weight decay every iteration.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from torch import nn

_BLOCK = re.compile(r"(?:^|\.)blocks\.(\d+)\.")
_EMBEDDING = ("patch_embed", "cls_token", "pos_embed", "mask_token", "register_tokens", "norm_pre")


def layer_id(name: str, num_layers: int, is_backbone: bool) -> int:
    """0 for the embeddings, i + 1 for block i, num_layers + 1 for the rest
    (final norm, heads)."""
    if not is_backbone:
        return num_layers + 1
    match = _BLOCK.search(name)
    if match:
        return int(match.group(1)) + 1
    if any(part in name for part in _EMBEDDING):
        return 0
    return num_layers + 1


def param_settings(
    name: str,
    num_layers: int,
    is_backbone: bool,
    layerwise_decay: float = 1.0,
    patch_embed_lr_mult: float = 1.0,
) -> dict[str, Any]:
    """The multipliers of one named parameter."""
    lr_mult = layerwise_decay ** (num_layers + 1 - layer_id(name, num_layers, is_backbone))
    if "patch_embed" in name:
        lr_mult *= patch_embed_lr_mult
    no_decay = name.endswith(".bias") or "norm" in name or "gamma" in name
    return {
        "lr_multiplier": lr_mult,
        "wd_multiplier": 0.0 if no_decay else 1.0,
        "is_last_layer": "last_layer" in name,
    }


def build_param_groups(
    modules: Iterable[tuple[nn.Module, bool]],
    num_layers: int,
    layerwise_decay: float = 1.0,
    patch_embed_lr_mult: float = 1.0,
) -> list[dict[str, Any]]:
    """Optimiser groups for ``(module, is_backbone)`` pairs (student backbone
    and heads). Each group: params, lr_multiplier, wd_multiplier, is_last_layer."""
    groups: dict[tuple, dict[str, Any]] = {}
    for module, is_backbone in modules:
        for name, param in module.named_parameters():
            if not param.requires_grad:
                continue
            settings = param_settings(name, num_layers, is_backbone, layerwise_decay, patch_embed_lr_mult)
            key = tuple(sorted(settings.items()))
            groups.setdefault(key, {**settings, "params": []})["params"].append(param)
    return list(groups.values())


def apply_schedule(optimizer, lr: float, last_layer_lr: float, weight_decay: float) -> None:
    """Set every group's lr and weight decay for this iteration."""
    for group in optimizer.param_groups:
        base = last_layer_lr if group["is_last_layer"] else lr
        group["lr"] = base * group["lr_multiplier"]
        group["weight_decay"] = weight_decay * group["wd_multiplier"]
