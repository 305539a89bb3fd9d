"""The package's one Vision Transformer, shared by the embed stage and the trainer.

Parameter names follow DINOv2 (``patch_embed.proj``, ``cls_token``, ``pos_embed``
[1, 1 + M*M, D], ``register_tokens``, ``mask_token`` [1, D], ``blocks.N.attn.qkv``,
``blocks.N.ls1.gamma``, ``blocks.N.mlp.fc1`` / ``mlp.w12``, ``norm``), so official
checkpoints load without renaming. Two options cover CLIP towers: ``pre_norm``
(a LayerNorm ``norm_pre`` before the blocks) and ``out_dim`` (a bias-free linear
``head`` on the CLS feature).

Token order is [CLS, registers, patches]; registers carry no positional embedding.
Crops of several sizes go through the blocks together as packed rows (see
``layers``): ``forward_features_list`` equals one ``forward_features`` per crop group.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from curation.errors import ConfigError
from curation.models.layers import ACTIVATIONS, Block, Groups, PatchEmbed, swiglu_hidden_dim

Features = dict[str, Any]

# name -> (embed_dim, depth, num_heads, ffn); [P] Table 17 and ViT-H of the curation.
ARCHS: dict[str, tuple[int, int, int, str]] = {
    "vit_small": (384, 12, 6, "mlp"),
    "vit_base": (768, 12, 12, "mlp"),
    "vit_large": (1024, 24, 16, "mlp"),
    "vit_huge": (1280, 32, 16, "mlp"),
    "vit_giant2": (1536, 40, 24, "swiglu"),
}
_ARCH_NAME = re.compile(r"^(vit_(?:small|base|large|huge|giant2))(?:_?(?:patch)?(\d+))?$")


class VisionTransformer(nn.Module):
    """ViT with DINOv2's features: LayerScale, SwiGLU, registers, mask token,
    bicubic positional-embedding interpolation, efficient stochastic depth and
    sequence packing. ``config`` holds the constructor arguments (JSON-able)."""

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 16,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        ffn: str = "mlp",
        qkv_bias: bool = True,
        layerscale_init: float | None = None,
        drop_path_rate: float = 0.0,
        drop_path_uniform: bool = True,
        num_register_tokens: int = 0,
        interpolate_offset: float = 0.1,
        interpolate_antialias: bool = False,
        norm_eps: float = 1e-6,
        in_chans: int = 3,
        act: str = "gelu",
        ffn_hidden: int | None = None,
        patch_bias: bool = True,
        pre_norm: bool = False,
        out_dim: int | None = None,
        naive: bool = False,
    ):
        super().__init__()
        self.config = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        _check_config(self.config)
        self.patch_size = patch_size
        self.embed_dim = embed_dim
        self.num_register_tokens = num_register_tokens
        self.interpolate_offset = interpolate_offset
        self.interpolate_antialias = interpolate_antialias
        self.pos_grid = img_size // patch_size

        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim, bias=patch_bias)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.pos_grid**2, embed_dim))
        self.register_tokens = (
            nn.Parameter(torch.zeros(1, num_register_tokens, embed_dim)) if num_register_tokens else None
        )
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim))
        self.norm_pre = nn.LayerNorm(embed_dim, eps=norm_eps) if pre_norm else nn.Identity()
        if ffn_hidden is None:
            ffn_hidden = int(embed_dim * mlp_ratio)
            ffn_hidden = swiglu_hidden_dim(ffn_hidden) if ffn == "swiglu" else ffn_hidden
        if drop_path_uniform:
            rates = [drop_path_rate] * depth
        else:
            rates = torch.linspace(0, drop_path_rate, depth).tolist()
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, ffn_hidden, ffn, qkv_bias, layerscale_init, rate, norm_eps, act)
            for rate in rates
        )
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps)
        self.head = nn.Linear(embed_dim, out_dim, bias=False) if out_dim else nn.Identity()
        self.naive = naive
        self.init_weights()

    @property
    def naive(self) -> bool:
        """Textbook attention, masked stochastic depth and one pass per crop group."""
        return self._naive

    @naive.setter
    def naive(self, value: bool) -> None:
        self._naive = bool(value)
        for module in self.modules():
            if module is not self and hasattr(module, "naive"):
                module.naive = self._naive  # type: ignore[assignment]  # torch types __setattr__ for tensors, modules

    @property
    def num_prefix_tokens(self) -> int:
        return 1 + self.num_register_tokens

    def init_weights(self) -> None:
        """DINOv2's init: trunc-normal(0.02) linears and positions, tiny CLS/registers."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        if self.register_tokens is not None:
            nn.init.normal_(self.register_tokens, std=1e-6)
        nn.init.zeros_(self.mask_token)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def interpolate_pos_embed(self, grid: tuple[int, int]) -> torch.Tensor:
        """Positional embedding [1, 1 + gh*gw, D] for a patch grid (gh, gw).

        Bicubic in float32 with DINOv2's scale factor (g + offset) / M, which
        avoids off-by-one output sizes from floating-point rounding.
        """
        m = self.pos_grid
        if grid == (m, m):
            return self.pos_embed
        pos = self.pos_embed.float()
        dim = pos.shape[-1]
        patch_pos = pos[:, 1:].reshape(1, m, m, dim).permute(0, 3, 1, 2)
        if self.interpolate_offset:
            scale = tuple((g + self.interpolate_offset) / m for g in grid)
            kwargs: dict[str, Any] = {"scale_factor": scale}
        else:
            kwargs = {"size": grid}
        patch_pos = F.interpolate(patch_pos, mode="bicubic", antialias=self.interpolate_antialias, **kwargs)
        if tuple(patch_pos.shape[-2:]) != tuple(grid):
            raise RuntimeError(f"positional embedding resized to {tuple(patch_pos.shape[-2:])}, not {grid}")
        patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], dim)
        return torch.cat([pos[:, :1], patch_pos], dim=1).to(self.pos_embed.dtype)

    def prepare_tokens(self, x: torch.Tensor, masks: torch.Tensor | None = None) -> torch.Tensor:
        """Images [B, C, H, W] (+ bool masks [B, N]) -> tokens [B, 1 + R + N, D]."""
        x, grid = self.patch_embed(x)
        if masks is not None:
            if masks.shape != x.shape[:2]:
                raise ValueError(f"masks of shape {tuple(masks.shape)}, expected {tuple(x.shape[:2])}")
            x = torch.where(masks.unsqueeze(-1), self.mask_token.to(x.dtype).unsqueeze(0), x)
        batch = x.shape[0]
        x = torch.cat([self.cls_token.to(x.dtype).expand(batch, -1, -1), x], dim=1)
        x = x + self.interpolate_pos_embed(grid).to(x.dtype)
        if self.register_tokens is not None:
            registers = self.register_tokens.to(x.dtype).expand(batch, -1, -1)
            x = torch.cat([x[:, :1], registers, x[:, 1:]], dim=1)
        return self.norm_pre(x)

    def _encode(self, images: list[torch.Tensor], masks: list[torch.Tensor | None]) -> tuple[torch.Tensor, Groups]:
        """Runs the blocks on all crop groups; returns packed rows [L, D] and groups."""
        if len(masks) != len(images):
            raise ValueError(f"{len(images)} crop groups but {len(masks)} masks")
        tokens = [self.prepare_tokens(x, m) for x, m in zip(images, masks, strict=False)]
        groups: Groups = tuple((t.shape[0], t.shape[1]) for t in tokens)
        rows = [t.reshape(-1, t.shape[-1]) for t in tokens]
        if self.naive:  # the baseline: one pass per crop group
            for i, group in enumerate(groups):
                for block in self.blocks:
                    rows[i] = block(rows[i], (group,))
            return torch.cat(rows), groups
        x = rows[0] if len(rows) == 1 else torch.cat(rows)
        for block in self.blocks:
            x = block(x, groups)
        return x, groups

    def forward_features_list(
        self, images: Sequence[torch.Tensor], masks: Sequence[torch.Tensor | None] | None = None
    ) -> list[Features]:
        """One forward pass for crop groups of different sizes; one feature dict per group.

        Each dict: x_norm_clstoken [B, D], x_norm_regtokens [B, R, D],
        x_norm_patchtokens [B, N, D], x_prenorm [B, 1 + R + N, D], masks.
        """
        masks = [None] * len(images) if masks is None else list(masks)
        x, groups = self._encode(list(images), masks)
        normed = self.norm(x)
        features, start, r = [], 0, self.num_register_tokens
        for (batch, seq), mask in zip(groups, masks, strict=False):
            norm_g = normed[start : start + batch * seq].view(batch, seq, -1)
            features.append(
                {
                    "x_norm_clstoken": norm_g[:, 0],
                    "x_norm_regtokens": norm_g[:, 1 : r + 1],
                    "x_norm_patchtokens": norm_g[:, r + 1 :],
                    "x_prenorm": x[start : start + batch * seq].view(batch, seq, -1),
                    "masks": mask,
                }
            )
            start += batch * seq
        return features

    def forward_features(self, x: torch.Tensor, masks: torch.Tensor | None = None) -> Features:
        return self.forward_features_list([x], [masks])[0]

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Images [B, C, H, W] -> embeddings [B, D'] (normed CLS through ``head``).
        Normalises only the CLS rows."""
        rows, ((batch, seq),) = self._encode([x], [None])
        return self.head(self.norm(rows.view(batch, seq, -1)[:, 0]))

    def forward(self, x, masks=None, is_training: bool = False):
        """``model(images)`` -> embeddings [B, D']. With ``is_training=True`` returns
        the feature dict, or a list of them when ``x`` is a list of crop groups
        (call through ``__call__`` so that FSDP hooks run)."""
        if isinstance(x, (list, tuple)):
            features = self.forward_features_list(x, masks)
            if is_training:
                return features
            return [self.head(f["x_norm_clstoken"]) for f in features]
        if is_training:
            return self.forward_features(x, masks)
        if masks is not None:
            return self.head(self.forward_features(x, masks)["x_norm_clstoken"])
        return self.embed(x)


def _check_config(cfg: dict[str, Any]) -> None:
    def bad(key: str, why: str) -> ConfigError:
        return ConfigError(f"VisionTransformer {key}={cfg[key]!r}: {why}")

    if cfg["embed_dim"] % cfg["num_heads"]:
        raise bad("num_heads", f"must divide embed_dim={cfg['embed_dim']}")
    if cfg["ffn"] not in ("mlp", "swiglu"):
        raise bad("ffn", "must be 'mlp' or 'swiglu'")
    if cfg["act"] not in ACTIVATIONS:
        raise bad("act", f"must be one of {sorted(ACTIVATIONS)}")
    if cfg["img_size"] % cfg["patch_size"]:
        raise bad("img_size", f"must be a multiple of patch_size={cfg['patch_size']}")
    if not 0.0 <= cfg["drop_path_rate"] < 1.0:
        raise bad("drop_path_rate", "must be in [0, 1)")


def _factory(name: str):
    def build(patch_size: int = 16, **kwargs: Any) -> VisionTransformer:
        return build_vit(name, patch_size=patch_size, **kwargs)

    build.__name__ = name
    build.__doc__ = f"{name}: embed_dim, depth, heads, ffn = {ARCHS[name]}."
    return build


def parse_arch(name: str) -> tuple[str, int | None]:
    """ "vit_large_14" -> ("vit_large", 14); "vit_giant2" -> ("vit_giant2", None)."""
    match = _ARCH_NAME.match(name)
    if match is None:
        raise ConfigError(f"unknown ViT architecture {name!r}; known: {', '.join(ARCHS)} (+ patch size)")
    return match.group(1), int(match.group(2)) if match.group(2) else None


def build_vit(name: str, **overrides: Any) -> VisionTransformer:
    """``build_vit("vit_huge", patch_size=16)``; names: vit_small, vit_base, vit_large,
    vit_huge, vit_giant2, optionally with the patch size ("vit_huge16",
    "vit_large_14", "vit_small_patch14"). ``overrides`` are constructor arguments."""
    base, patch_size = parse_arch(name)
    embed_dim, depth, num_heads, ffn = ARCHS[base]
    kwargs: dict[str, Any] = dict(embed_dim=embed_dim, depth=depth, num_heads=num_heads, ffn=ffn)
    if patch_size:
        kwargs["patch_size"] = patch_size
    kwargs.update(overrides)
    return VisionTransformer(**kwargs)


vit_small = _factory("vit_small")
vit_base = _factory("vit_base")
vit_large = _factory("vit_large")
vit_huge = _factory("vit_huge")
vit_giant2 = _factory("vit_giant2")


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def flops_per_image(model: VisionTransformer, img_size: int) -> float:
    """Forward FLOPs (2 per multiply-add) of one image: patch embedding, blocks, head."""
    cfg = model.config
    d, p = cfg["embed_dim"], cfg["patch_size"]
    n = (img_size // p) ** 2
    t = n + model.num_prefix_tokens
    mlp: Any = model.blocks[0].mlp  # a layers.Mlp or layers.SwiGLU
    hidden = mlp.fc2.in_features if cfg["ffn"] == "mlp" else mlp.w3.in_features
    ffn_macs = t * d * hidden * (3 if cfg["ffn"] == "swiglu" else 2)
    block = t * d * 3 * d + 2 * t * t * d + t * d * d + ffn_macs
    return 2.0 * (n * d * p * p * cfg["in_chans"] + cfg["depth"] * block + d * (cfg["out_dim"] or 0))


__all__ = [
    "ARCHS",
    "VisionTransformer",
    "build_vit",
    "parse_arch",
    "count_params",
    "flops_per_image",
    "vit_small",
    "vit_base",
    "vit_large",
    "vit_huge",
    "vit_giant2",
]
