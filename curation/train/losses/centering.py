"""Teacher centering: how the teacher's logits become target distributions.

Two modes, as in DINOv2:

- ``sinkhorn_knopp``: a few Sinkhorn-Knopp iterations turn ``exp(logits / T)``
  into an assignment that is uniform over prototypes and sums to one per sample
  (SwAV, DINOv2 for ViT-L/g). Sums are all-reduced, so the batch it normalises
  over is the global batch on every rank.
- ``centering``: DINO's EMA centre subtracted from the logits before the
  softmax; the centre is the all-reduced batch mean, updated after use.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import nn


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce(tensor: torch.Tensor, op=None) -> torch.Tensor:
    """In-place all-reduce (sum by default) when several ranks run; no-op alone."""
    if _distributed():
        dist.all_reduce(tensor, op=op or dist.ReduceOp.SUM)
    return tensor


def _logsumexp_all(x: torch.Tensor, dim: int | None) -> torch.Tensor:
    """logsumexp over ``dim`` (None: everything) and over all ranks (keepdim)."""
    dims = tuple(range(x.dim())) if dim is None else (dim,)
    if x.numel():
        peak = x.amax(dim=dims, keepdim=True)
    else:  # a rank may hold no rows (no masked patch in its batch)
        shape = [1 if d in dims else n for d, n in enumerate(x.shape)]
        peak = x.new_full(shape, float("-inf"))
    peak = all_reduce(peak, dist.ReduceOp.MAX if _distributed() else None)
    peak = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))
    total = all_reduce(torch.exp(x - peak).sum(dim=dims, keepdim=True))
    return peak + torch.log(total)


@torch.no_grad()
def sinkhorn_knopp(logits: torch.Tensor, temperature: float, iterations: int = 3) -> torch.Tensor:
    """Balanced soft assignments of samples to prototypes.

    logits: [B, K] teacher logits of this rank. Returns Q: [B, K], float32,
    whose rows sum to 1 and whose columns sum to about (global B) / K across
    ranks (exactly in the limit; DINOv2 runs 3 iterations). Sums, and B
    itself, are all-reduced: ranks may hold different numbers of rows (iBOT's
    masked patches).

    The iterations of ``Q = exp(logits / T)`` normalisation are carried out on
    log Q: the same arithmetic, without overflow or underflow of ``exp`` when
    logits / T is large.
    """
    log_q = logits.float().t() / temperature  # [K, B]: prototypes are rows, as in the paper
    num_prototypes = log_q.shape[0]
    num_samples = all_reduce(torch.tensor(float(log_q.shape[1]), device=log_q.device))
    log_k, log_b = math.log(num_prototypes), torch.log(num_samples)
    log_q = log_q - _logsumexp_all(log_q, None)
    for _ in range(iterations):
        log_q = log_q - _logsumexp_all(log_q, 1) - log_k  # each prototype gets mass 1/K
        log_q = log_q - torch.logsumexp(log_q, dim=0, keepdim=True) - log_b  # each sample 1/B
    return torch.exp(log_q + log_b).t()  # columns of Q sum to one: a distribution per sample


class Centering(nn.Module):
    """DINO's centring: softmax((logits - centre) / T) with an EMA centre [1, K]."""

    center: torch.Tensor  # a buffer

    def __init__(self, num_prototypes: int, momentum: float = 0.9):
        super().__init__()
        self.momentum = momentum
        self.register_buffer("center", torch.zeros(1, num_prototypes))

    @torch.no_grad()
    def softmax(self, logits: torch.Tensor, temperature: float) -> torch.Tensor:
        """logits [B, K] -> probabilities [B, K] (float32), with the current centre."""
        return torch.softmax((logits.float() - self.center) / temperature, dim=-1)

    @torch.no_grad()
    def update(self, logits: torch.Tensor) -> None:
        """Move the centre towards the global batch mean of ``logits`` [B, K]."""
        total = all_reduce(logits.float().sum(dim=0, keepdim=True))
        count = all_reduce(torch.tensor(float(logits.shape[0]), device=logits.device))
        batch_center = total / count.clamp(min=1.0)
        self.center.mul_(self.momentum).add_(batch_center, alpha=1.0 - self.momentum)
