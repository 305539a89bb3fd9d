"""iBOT loss on patch tokens: the student predicts the teacher's distribution of
the patches it saw masked.

Each masked patch's cross-entropy is weighted by 1 / (masked patches of its
image), so every masked image counts once whatever its mask ratio; the sum is
divided by the number of global-crop images, masked or not
(``ibot_patch_loss.py:forward_masked``). DINOv2's loss scales (x2 for two
global crops, x1/2 per crop) multiply to one and are omitted.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def mask_weights(masks: torch.Tensor) -> torch.Tensor:
    """masks: [B, N] bool -> weight of each masked patch [M] (row-major order),
    1 / (masked patches of its image)."""
    per_image = 1.0 / masks.sum(dim=-1).clamp(min=1).float()
    return per_image[:, None].expand_as(masks)[masks]


def ibot_loss(
    student_logits: torch.Tensor,
    teacher_probs: torch.Tensor,
    weights: torch.Tensor,
    num_images: int,
    student_temp: float = 0.1,
) -> torch.Tensor:
    """student_logits [M, K] and teacher_probs [M, K] of the M masked patches,
    weights [M] (see :func:`mask_weights`), num_images: global-crop images of
    this rank. Returns the scalar loss."""
    log_probs = F.log_softmax(student_logits.float() / student_temp, dim=-1)
    per_patch = -(teacher_probs.float() * log_probs).sum(dim=-1)
    return (per_patch * weights).sum() / max(num_images, 1)
