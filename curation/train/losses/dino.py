"""DINO loss on the CLS token: cross-entropy between teacher and student views.

The teacher sees the global crops, the student all crops. Every (teacher
crop, student crop) pair contributes one cross-entropy except the pairs where
both are the same global view. DINOv2 writes this with a swap of the teacher's
two global outputs and weights 1/18 and 2/18 for 2 global + 8 local crops
(``ssl_meta_arch.py``); that is exactly the mean over the 18 cross-view pairs
returned here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pair_cross_entropy(student_logits: torch.Tensor, teacher_probs: torch.Tensor, student_temp: float) -> torch.Tensor:
    """Mean cross-entropy of every (teacher crop, student crop) pair.

    student_logits: [S, B, K] (crop-major: S crops of the same B images),
    teacher_probs: [T, B, K] target distributions. Returns [T, S]: entry
    (t, s) is mean_b -sum_k p_t[b, k] log softmax(z_s[b] / temp)[k].
    """
    log_probs = F.log_softmax(student_logits.float() / student_temp, dim=-1)
    # [B, T, K] @ [B, K, S] -> [B, T, S]: one batched matmul instead of T*S passes.
    per_image = torch.bmm(teacher_probs.float().transpose(0, 1), log_probs.permute(1, 2, 0))
    return -per_image.mean(dim=0)


def cross_view_mask(num_teacher: int, num_student: int, device=None) -> torch.Tensor:
    """[T, S] bool: True where the pair counts (student crop s is not teacher crop t)."""
    mask = torch.ones(num_teacher, num_student, dtype=torch.bool, device=device)
    same = torch.arange(min(num_teacher, num_student), device=device)
    mask[same, same] = False
    return mask


def dino_loss(
    student_logits: torch.Tensor, teacher_probs: torch.Tensor, student_temp: float = 0.1
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """DINO loss and its parts.

    student_logits [S, B, K] with the T global crops first, teacher_probs
    [T, B, K]. Returns (loss, parts): loss is the mean over cross-view pairs;
    parts holds its split into ``dino_global`` (global student crops) and
    ``dino_local`` (local crops), which add up to ``loss``.
    """
    num_teacher, num_student = teacher_probs.shape[0], student_logits.shape[0]
    pairs = pair_cross_entropy(student_logits, teacher_probs, student_temp)
    mask = cross_view_mask(num_teacher, num_student, pairs.device)
    weights = mask.float() / mask.sum()
    terms = pairs * weights
    parts = {"dino_global": terms[:, :num_teacher].sum(), "dino_local": terms[:, num_teacher:].sum()}
    return terms.sum(), parts
