"""KoLeo regulariser (Sablayrolles et al. 2019): spreads features uniformly by
penalising small nearest-neighbour distances within a batch.

DINOv2 applies it to the student's normalised backbone CLS token of each global
crop separately, per rank, with no communication (paper App. B.1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def koleo_loss(features: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """features: [B, D] (B >= 2). Returns -mean_i log(||x_i - x_nn(i)|| + eps)
    on the L2-normalised features, computed in float32."""
    x = F.normalize(features.float(), p=2, dim=-1, eps=eps)
    with torch.no_grad():
        similarity = x @ x.t()
        similarity.fill_diagonal_(-2.0)  # below any cosine: a point is not its own neighbour
        nearest = similarity.argmax(dim=1)
    distances = (x - x[nearest]).norm(p=2, dim=-1)
    return -torch.log(distances + eps).mean()
