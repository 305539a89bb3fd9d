"""The DINO/iBOT projection head.

A 3-layer MLP (in -> hidden -> hidden -> bottleneck, GELU, no norm layers),
an L2 normalisation, then a weight-normalised linear layer onto K prototypes
without bias whose norms (``weight_g``) start at 1 (``layers/dino_head.py``).
The prototype layer is called ``last_layer``: the optimiser freezes it during
the first iterations by name.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class WeightNormLinear(nn.Module):
    """Linear map without bias, weight = weight_g * weight_v / ||weight_v|| per row.

    weight_v: [K, D] directions, weight_g: [K, 1] norms. Written out rather than
    with ``torch.nn.utils.weight_norm`` so that both are plain parameters that
    FSDP shards and checkpoints by name.
    """

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.weight_v = nn.Parameter(torch.empty(out_dim, in_dim))
        self.weight_g = nn.Parameter(torch.ones(out_dim, 1))
        nn.init.trunc_normal_(self.weight_v, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = self.weight_v
        weight = v * (self.weight_g / v.norm(dim=1, keepdim=True).clamp(min=1e-12))
        return F.linear(x, weight.to(x.dtype))


class DINOHead(nn.Module):
    """[.., in_dim] -> prototype logits [.., K]."""

    def __init__(
        self,
        in_dim: int,
        num_prototypes: int = 65536,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        num_layers: int = 3,
    ):
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [bottleneck_dim]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:], strict=False)):
            layers.append(nn.Linear(a, b))
            if i < num_layers - 1:
                layers.append(nn.GELU())
        self.mlp = nn.Sequential(*layers)
        self.last_layer = WeightNormLinear(bottleneck_dim, num_prototypes)
        for module in self.mlp:
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.mlp(x)
        # fp16's smallest normal is ~6e-5: an eps of 1e-12 would underflow to 0.
        eps = 1e-6 if x.dtype == torch.float16 else 1e-12
        x = F.normalize(x, p=2, dim=-1, eps=eps)
        return self.last_layer(x)
