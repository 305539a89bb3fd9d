"""State-dict conversion from other ViT layouts to the package's ``VisionTransformer``.

Every function maps names (and the few tensors whose layout differs) and returns
``(config, state)``: the constructor arguments of an equivalent model and its
state dict. Anything the ViT cannot represent raises ``CheckpointError`` rather
than being dropped silently.
"""

from __future__ import annotations

import math
import re
from typing import Any

import torch
from torch import nn

from curation.errors import CheckpointError, ConfigError
from curation.models.vit import ARCHS, parse_arch

State = dict[str, torch.Tensor]

# Prefixes of training checkpoints, tried in order after the caller's choice.
BACKBONE_PREFIXES = ("module.backbone.", "backbone.", "module.")
_CHUNKED = re.compile(r"^blocks\.\d+\.(\d+)\.")  # BlockChunk (FSDP) layout: blocks.<chunk>.<index>.


def unwrap_checkpoint(obj: Any, which: str = "teacher") -> State:
    """The backbone's tensors of a DINOv2 / DINO / iBOT checkpoint or plain state dict.

    Descends into ``which`` ("teacher" or "student"), ``model`` and ``state_dict``
    entries, keeps the keys under the first matching prefix
    (``{which}.backbone.``, ``module.backbone.``, ``backbone.``, ``module.``) and
    undoes BlockChunk numbering (``blocks.1.7.x`` -> ``blocks.7.x``).
    """
    while isinstance(obj, dict) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        inner = next((obj[k] for k in (which, "model", "state_dict") if isinstance(obj.get(k), dict)), None)
        if inner is None:
            tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
            if not tensors:
                raise CheckpointError(f"no state dict found; top-level keys: {sorted(obj)[:20]}")
            obj = tensors
        else:
            obj = inner
    if not isinstance(obj, dict):
        raise CheckpointError(f"expected a state dict, found {type(obj).__name__}")
    for prefix in (f"{which}.backbone.", *BACKBONE_PREFIXES):
        if any(k.startswith(prefix) for k in obj):
            obj = {k[len(prefix) :]: v for k, v in obj.items() if k.startswith(prefix)}
            break
    return {_CHUNKED.sub(r"blocks.\1.", k): v for k, v in obj.items()}


def dinov2_config(state: State, arch: str | None = None) -> dict[str, Any]:
    """ViT constructor arguments read from the shapes of a DINOv2/DINO/iBOT state dict.

    Heads are not visible in shapes: they come from ``arch`` or are embed_dim / 64,
    the head width of every DINO, iBOT and DINOv2 model.
    """
    for key in ("patch_embed.proj.weight", "pos_embed", "cls_token", "norm.weight"):
        if key not in state:
            raise CheckpointError(f"not a DINO-style ViT state dict: missing {key!r}")
    dim, in_chans, patch, _ = state["patch_embed.proj.weight"].shape
    grid = math.isqrt(state["pos_embed"].shape[1] - 1)
    if grid * grid != state["pos_embed"].shape[1] - 1:
        raise CheckpointError(f"pos_embed of shape {tuple(state['pos_embed'].shape)} is not a square grid + CLS")
    depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    swiglu = "blocks.0.mlp.w12.weight" in state
    hidden = state["blocks.0.mlp.w12.weight"].shape[0] // 2 if swiglu else state["blocks.0.mlp.fc1.weight"].shape[0]
    heads = dim // 64
    if arch is not None:
        try:
            base, _ = parse_arch(arch)
        except ConfigError as err:
            raise CheckpointError(str(err)) from err
        arch_dim, arch_depth, heads, _ = ARCHS[base]
        if (arch_dim, arch_depth) != (dim, depth):
            raise CheckpointError(
                f"arch {arch!r} has embed_dim={arch_dim}, depth={arch_depth}; the checkpoint {dim}, {depth}"
            )
    registers = state.get("register_tokens")
    # DINOv2's register models resize positions with antialias and no offset
    # (its hub entry points), the others with offset 0.1 and no antialias.
    resize = dict(interpolate_offset=0.0, interpolate_antialias=True) if registers is not None else {}
    return dict(
        img_size=grid * patch,
        patch_size=patch,
        in_chans=in_chans,
        embed_dim=dim,
        depth=depth,
        num_heads=heads,
        ffn="swiglu" if swiglu else "mlp",
        ffn_hidden=hidden,
        qkv_bias="blocks.0.attn.qkv.bias" in state,
        layerscale_init=1e-5 if "blocks.0.ls1.gamma" in state else None,
        num_register_tokens=0 if registers is None else registers.shape[1],
        **resize,
    )


def dinov2_state(state: State) -> State:
    """Renames iBOT's ``masked_embed`` to ``mask_token`` [1, D]; other names match."""
    state = dict(state)
    if "masked_embed" in state:
        state["mask_token"] = state.pop("masked_embed").reshape(1, -1)
    if "mask_token" in state:
        state["mask_token"] = state["mask_token"].reshape(1, -1)
    return state


def _act_name(act: nn.Module) -> str:
    name = type(act).__name__
    if name == "GELU" and getattr(act, "approximate", "none") == "none":
        return "gelu"
    if name == "QuickGELU":
        return "quick_gelu"
    raise CheckpointError(f"unsupported activation {act!r}")


def _require(ok: bool, what: str) -> None:
    if not ok:
        raise CheckpointError(f"unsupported model feature: {what}")


def _timm_ffn(block: Any) -> tuple[str, int, str]:
    mlp, kind = block.mlp, type(block.mlp).__name__
    _require(kind in ("Mlp", "GluMlp", "SwiGLU"), f"timm MLP {kind}")
    _require(isinstance(getattr(mlp, "norm", nn.Identity()), nn.Identity), "a norm inside the MLP")
    if kind == "Mlp":
        return "mlp", mlp.fc1.out_features, _act_name(mlp.act)
    _require(type(mlp.act).__name__ == "SiLU", "a GLU other than SwiGLU")
    if kind == "GluMlp":
        _require(not mlp.gate_last, "GluMlp with the gate in the second half")
        return "swiglu", mlp.fc1.out_features // 2, "gelu"
    return "swiglu", mlp.fc1_g.out_features, "gelu"


def timm_config(model: Any) -> dict[str, Any]:
    """ViT constructor arguments equivalent to a timm ``VisionTransformer``.

    ``model`` is read by attribute (timm's modules are untyped), hence ``Any``.
    """
    _require(type(model).__name__ == "VisionTransformer", f"timm model class {type(model).__name__}")
    _require(model.cls_token is not None and model.global_pool == "token", "pooling other than the CLS token")
    _require(getattr(model, "attn_pool", None) is None, "attention pooling")
    _require(isinstance(model.fc_norm, nn.Identity), "fc_norm")
    block = model.blocks[0]
    _require(all(type(b).__name__ == "Block" for b in model.blocks), "timm block types other than Block")
    attn = block.attn
    _require(isinstance(attn.q_norm, nn.Identity) and isinstance(attn.norm, nn.Identity), "qk-norm / scale-norm")
    _require(getattr(attn, "gate", None) is None, "gated attention")
    biasless = [n for n, m in block.named_modules() if isinstance(m, nn.Linear) and m.bias is None]
    _require(set(biasless) <= {"attn.qkv"}, f"linear layers without bias: {biasless}")
    proj = model.patch_embed.proj
    _require(proj.kernel_size[0] == proj.kernel_size[1] == proj.stride[0], "non-square patches")
    ffn, hidden, act = _timm_ffn(block)
    grid = model.patch_embed.grid_size
    _require(grid[0] == grid[1], "a non-square positional-embedding grid")
    return dict(
        img_size=grid[0] * proj.kernel_size[0],
        patch_size=proj.kernel_size[0],
        in_chans=proj.in_channels,
        embed_dim=model.embed_dim,
        depth=len(model.blocks),
        num_heads=attn.num_heads,
        ffn=ffn,
        ffn_hidden=hidden,
        act=act,
        qkv_bias=attn.qkv.bias is not None,
        layerscale_init=1e-5 if hasattr(block.ls1, "gamma") else None,
        num_register_tokens=model.num_reg_tokens,
        norm_eps=block.norm1.eps,
        patch_bias=proj.bias is not None,
        pre_norm=not isinstance(model.norm_pre, nn.Identity),
    )


def _timm_ffn_key(key: str, tensor: torch.Tensor, state: State) -> tuple[str, torch.Tensor] | None:
    """timm GluMlp (fc1 = [gate; value]) and SwiGLU (fc1_g, fc1_x) -> w12 / w3."""
    prefix, _, name = key.rpartition(".mlp.")
    if name.startswith("fc1_x."):
        return None  # folded into w12 with fc1_g
    if name.startswith("fc1_g."):
        other = state[f"{prefix}.mlp.fc1_x.{name[6:]}"]
        return f"{prefix}.mlp.w12.{name[6:]}", torch.cat([tensor, other])
    return f"{prefix}.mlp.{name.replace('fc1', 'w12').replace('fc2', 'w3')}", tensor


def timm_state(model: Any, config: dict[str, Any]) -> State:
    """The timm model's weights in the package's layout (classifier head dropped)."""
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("head.")}
    out: State = {}
    for key, tensor in state.items():
        if config["ffn"] == "swiglu" and ".mlp." in key:
            mapped = _timm_ffn_key(key, tensor, state)
            if mapped is not None:
                out[mapped[0]] = mapped[1]
        elif key == "reg_token":
            out["register_tokens"] = tensor
        elif key != "pos_embed":
            out[key] = tensor
    pos, regs = state["pos_embed"], config["num_register_tokens"]
    if model.no_embed_class:  # no CLS position: a zero one is equivalent
        pos = torch.cat([torch.zeros_like(pos[:, :1]), pos], dim=1)
    elif regs:  # registers with positions: fold them into the register tokens
        out["register_tokens"] = out["register_tokens"] + pos[:, 1 : 1 + regs]
        pos = torch.cat([pos[:, :1], pos[:, 1 + regs :]], dim=1)
    out["pos_embed"] = pos
    return out


def openclip_config(visual: Any) -> dict[str, Any]:
    """ViT constructor arguments equivalent to an open_clip ``VisionTransformer`` tower (read by attribute)."""
    _require(type(visual).__name__ == "VisionTransformer", f"open_clip tower {type(visual).__name__}")
    _require(visual.attn_pool is None and visual.pool_type == "tok", "pooling other than the CLS token")
    block = visual.transformer.resblocks[0]
    _require(type(block).__name__ == "ResidualAttentionBlock", f"open_clip block {type(block).__name__}")
    _require(isinstance(block.attn, nn.MultiheadAttention), "custom attention")
    _require(not hasattr(block, "ln_1_kv"), "cross attention")
    conv = visual.conv1
    grid = visual.grid_size
    _require(grid[0] == grid[1] and conv.kernel_size[0] == conv.kernel_size[1], "non-square grid or patches")
    return dict(
        img_size=grid[0] * conv.kernel_size[0],
        patch_size=conv.kernel_size[0],
        in_chans=conv.in_channels,
        embed_dim=conv.out_channels,
        depth=len(visual.transformer.resblocks),
        num_heads=block.attn.num_heads,
        ffn="mlp",
        ffn_hidden=block.mlp.c_fc.out_features,
        act=_act_name(block.mlp.gelu),
        qkv_bias=block.attn.in_proj_bias is not None,
        layerscale_init=1e-5 if hasattr(block.ls_1, "gamma") else None,
        norm_eps=block.ln_1.eps,
        patch_bias=conv.bias is not None,
        pre_norm=not isinstance(visual.ln_pre, nn.Identity),
        out_dim=None if visual.proj is None else visual.proj.shape[1],
    )


_OPENCLIP_RULES = [
    (r"^conv1\.", "patch_embed.proj."),
    (r"^ln_pre\.", "norm_pre."),
    (r"^ln_post\.", "norm."),
    (r"^transformer\.resblocks\.(\d+)\.", r"blocks.\1."),
    (r"\.ln_1\.", ".norm1."),
    (r"\.ln_2\.", ".norm2."),
    (r"\.ls_1\.", ".ls1."),
    (r"\.ls_2\.", ".ls2."),
    (r"\.attn\.in_proj_(weight|bias)$", r".attn.qkv.\1"),
    (r"\.attn\.out_proj\.", ".attn.proj."),
    (r"\.mlp\.c_fc\.", ".mlp.fc1."),
    (r"\.mlp\.c_proj\.", ".mlp.fc2."),
]


def openclip_state(visual: nn.Module) -> State:
    """The open_clip tower's weights in the package's layout."""
    out: State = {}
    for key, tensor in visual.state_dict().items():
        if key == "class_embedding":
            out["cls_token"] = tensor.reshape(1, 1, -1)
        elif key == "positional_embedding":
            out["pos_embed"] = tensor.unsqueeze(0)
        elif key == "proj":
            out["head.weight"] = tensor.t()  # CLIP computes x @ proj
        else:
            for pattern, repl in _OPENCLIP_RULES:
                key = re.sub(pattern, repl, key)
            out[key] = tensor
    return out
