"""Layers of the Vision Transformer, all working on *packed* token rows.

A packed batch is a 2-D tensor ``x`` of shape [L, D] holding the tokens of one or
more crop groups back to back, and ``groups``, a tuple of ``(batch, seq_len)``
pairs with ``L == sum(b * t for b, t in groups)``. A plain [B, T, D] batch is the
single group ``((B, T),)`` and ``x.reshape(B * T, D)`` (a view). Linear layers,
norms and the FFN see all rows at once (one large matmul for every crop of a
training step); only attention looks at the groups, one fused
``scaled_dot_product_attention`` call per group, which is exactly block-diagonal
attention without materialising an [L, L] mask.

Every module that has a ``naive`` attribute switches to the textbook computation
(explicit softmax(QK^T)V, stochastic depth computed then masked); it exists to
benchmark the efficient paths against and gives the same results in eval mode.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

Groups = tuple[tuple[int, int], ...]


def swiglu_hidden_dim(hidden: int) -> int:
    """DINOv2's SwiGLU width: 2/3 of the MLP width, rounded up to a multiple of 8."""
    return (int(hidden * 2 / 3) + 7) // 8 * 8


class PatchEmbed(nn.Module):
    """Image [B, C, H, W] -> patch tokens [B, H/p * W/p, D] and the grid (H/p, W/p)."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int, bias: bool = True):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride=patch_size, bias=bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        h, w = x.shape[-2:]
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(f"image size {h}x{w} is not a multiple of patch size {self.patch_size}")
        x = self.proj(x)
        grid = (x.shape[-2], x.shape[-1])
        # On a channels-last conv output this transpose is already contiguous.
        return x.flatten(2).transpose(1, 2), grid


class LayerScale(nn.Module):
    def __init__(self, dim: int, init: float):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class QuickGELU(nn.Module):
    """x * sigmoid(1.702 x): the activation of OpenAI's CLIP towers."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {"gelu": nn.GELU, "quick_gelu": QuickGELU}


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, act: str = "gelu"):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = ACTIVATIONS[act]()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SwiGLUFFN(nn.Module):
    """DINOv2's fused SwiGLU: ``w3(silu(a) * b)`` with ``a, b = w12(x).chunk(2)``."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.w12 = nn.Linear(dim, 2 * hidden)
        self.w3 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(a) * b)


class Attention(nn.Module):
    """Multi-head self-attention over packed rows, block-diagonal by group."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.naive = False

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if not self.naive:
            return F.scaled_dot_product_attention(q, k, v)
        weights = (q * self.head_dim**-0.5) @ k.transpose(-2, -1)
        return weights.softmax(dim=-1) @ v

    def forward(self, x: torch.Tensor, groups: Groups) -> torch.Tensor:
        """x: [L, D] packed rows -> [L, D]."""
        qkv = self.qkv(x)
        outs, start = [], 0
        for batch, seq in groups:
            rows = batch * seq
            chunk = qkv[start : start + rows].view(batch, seq, 3, self.num_heads, self.head_dim)
            q, k, v = chunk.permute(2, 0, 3, 1, 4).unbind(0)  # each [b, heads, t, head_dim]
            outs.append(self._attend(q, k, v).transpose(1, 2).reshape(rows, -1))
            start += rows
        return self.proj(outs[0] if len(outs) == 1 else torch.cat(outs))


def group_rows(groups: Groups, kept: list[torch.Tensor]) -> torch.Tensor:
    """Row indices [sum k_g * t_g] of the kept samples ``kept[g]`` of each group."""
    rows, offset = [], 0
    for (batch, seq), idx in zip(groups, kept, strict=False):
        tokens = torch.arange(seq, device=idx.device)
        rows.append((offset + idx[:, None] * seq + tokens[None, :]).reshape(-1))
        offset += batch * seq
    return torch.cat(rows)


def drop_add_residual(
    x: torch.Tensor,
    groups: Groups,
    branch: Callable[[torch.Tensor, Groups], torch.Tensor],
    drop_rate: float,
) -> torch.Tensor:
    """``x + branch(x)`` under sample-wise stochastic depth, computing the branch
    only on the kept samples (DINOv2's ``drop_add_residual_stochastic_depth``).

    Each group keeps a random subset of ``max(int(b * (1 - drop_rate)), 1)`` of its
    ``b`` samples; their residual is scaled by ``b / kept`` so the expectation over
    draws equals the deterministic ``x + branch(x)``. x: [L, D].
    """
    kept, scales = [], []
    for batch, _ in groups:
        size = max(int(batch * (1.0 - drop_rate)), 1)
        kept.append(torch.randperm(batch, device=x.device)[:size])
        scales.append(batch / size)
    rows = group_rows(groups, kept)
    sub_groups = tuple((len(idx), seq) for idx, (_, seq) in zip(kept, groups, strict=False))
    residual = branch(x.index_select(0, rows), sub_groups).to(x.dtype)
    if len(set(scales)) == 1:
        return torch.index_add(x, 0, rows, residual, alpha=scales[0])
    row_scale = torch.cat(
        [
            torch.full((len(idx) * seq,), s, device=x.device, dtype=x.dtype)
            for idx, (_, seq), s in zip(kept, groups, scales, strict=False)
        ]
    )
    return torch.index_add(x, 0, rows, residual * row_scale[:, None])


def masked_drop_residual(
    x: torch.Tensor,
    groups: Groups,
    branch: Callable[[torch.Tensor, Groups], torch.Tensor],
    drop_rate: float,
) -> torch.Tensor:
    """Textbook stochastic depth: the branch runs on every sample, then dropped
    samples are zeroed and kept ones scaled by 1 / (1 - drop_rate)."""
    keep = 1.0 - drop_rate
    masks = [(torch.rand(batch, device=x.device) < keep).to(x.dtype).repeat_interleave(seq) for batch, seq in groups]
    return x + branch(x, groups) * (torch.cat(masks)[:, None] / keep)


class Block(nn.Module):
    """Pre-norm transformer block: ``x + ls1(attn(norm1(x)))``, ``x + ls2(ffn(norm2(x)))``."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        ffn_hidden: int,
        ffn: str = "mlp",
        qkv_bias: bool = True,
        layerscale_init: float | None = None,
        drop_path: float = 0.0,
        norm_eps: float = 1e-6,
        act: str = "gelu",
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.ls1 = LayerScale(dim, layerscale_init) if layerscale_init else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = SwiGLUFFN(dim, ffn_hidden) if ffn == "swiglu" else Mlp(dim, ffn_hidden, act)
        self.ls2 = LayerScale(dim, layerscale_init) if layerscale_init else nn.Identity()
        self.drop_path = drop_path
        self.naive = False

    def _attn_branch(self, x: torch.Tensor, groups: Groups) -> torch.Tensor:
        return self.ls1(self.attn(self.norm1(x), groups))

    def _ffn_branch(self, x: torch.Tensor, groups: Groups) -> torch.Tensor:
        return self.ls2(self.mlp(self.norm2(x)))

    def _residual(self, x: torch.Tensor, groups: Groups, branch) -> torch.Tensor:
        if not (self.training and self.drop_path > 0.0):
            return x + branch(x, groups)
        if self.naive:
            return masked_drop_residual(x, groups, branch, self.drop_path)
        return drop_add_residual(x, groups, branch, self.drop_path)

    def forward(self, x: torch.Tensor, groups: Groups) -> torch.Tensor:
        """x: [L, D] packed rows of ``groups`` -> [L, D]."""
        x = self._residual(x, groups, self._attn_branch)
        return self._residual(x, groups, self._ffn_branch)
