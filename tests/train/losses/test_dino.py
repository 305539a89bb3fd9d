import math

import torch

from curation.train.losses.dino import cross_view_mask, dino_loss, pair_cross_entropy


def test_dino_loss_hand_computed():
    # S = 3 student crops (2 global + 1 local), T = 2 teacher crops, B = 1, K = 2, temp 1.
    student = torch.tensor([[[0.0, 0.0]], [[math.log(3), 0.0]], [[0.0, math.log(3)]]])
    teacher = torch.tensor([[[1.0, 0.0]], [[0.5, 0.5]]])
    loss, parts = dino_loss(student, teacher, student_temp=1.0)
    t0_s1 = -math.log(3 / 4)
    t0_s2 = -math.log(1 / 4)
    t1_s0 = math.log(2)
    t1_s2 = -(0.5 * math.log(1 / 4) + 0.5 * math.log(3 / 4))
    assert math.isclose(loss.item(), (t0_s1 + t0_s2 + t1_s0 + t1_s2) / 4, rel_tol=1e-6)
    assert math.isclose(parts["dino_global"].item(), (t0_s1 + t1_s0) / 4, rel_tol=1e-6)
    assert math.isclose(parts["dino_local"].item(), (t0_s2 + t1_s2) / 4, rel_tol=1e-6)


def test_pair_matrix_entries():
    student = torch.tensor([[[0.0, 0.0]], [[math.log(3), 0.0]]])
    teacher = torch.tensor([[[1.0, 0.0]]])
    pairs = pair_cross_entropy(student, teacher, 1.0)
    assert pairs.shape == (1, 2)
    assert torch.allclose(pairs, torch.tensor([[math.log(2), -math.log(3 / 4)]]))
    assert cross_view_mask(2, 4).tolist() == [[False, True, True, True], [True, False, True, True]]


def _official_dino(student_global, student_local, teacher, temp):
    """DINOv2's formulation: swapped teacher globals, weights 1/18 and 2/18."""

    def ce_sum(students, teachers):
        total = 0.0
        for s in students:
            lsm = torch.log_softmax(s / temp, dim=-1)
            for t in teachers:
                total -= (t * lsm).sum(-1).mean()
        return total

    n_terms = 2 * len(student_local) + 2
    t_a, t_b = teacher.chunk(2)
    local = ce_sum(student_local, [t_a, t_b]) / n_terms
    global_ = ce_sum([student_global], [torch.cat([t_b, t_a])]) * 2 / n_terms
    return local + global_, global_, local


def test_matches_official_formulation():
    torch.manual_seed(0)
    batch, k, n_local = 4, 16, 8
    logits = torch.randn(2 + n_local, batch, k)
    teacher = torch.softmax(torch.randn(2, batch, k) / 0.05, dim=-1)
    loss, parts = dino_loss(logits, teacher, 0.1)
    ref, ref_global, ref_local = _official_dino(
        logits[:2].reshape(2 * batch, k), list(logits[2:]), teacher.reshape(2 * batch, k), 0.1
    )
    assert torch.allclose(loss, ref, atol=1e-5)
    assert torch.allclose(parts["dino_global"], ref_global, atol=1e-5)
    assert torch.allclose(parts["dino_local"], ref_local, atol=1e-5)


def test_gradient_flows_to_student_only():
    student = torch.randn(3, 2, 5, requires_grad=True)
    teacher = torch.softmax(torch.randn(2, 2, 5), dim=-1)
    loss, _ = dino_loss(student, teacher)
    loss.backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
