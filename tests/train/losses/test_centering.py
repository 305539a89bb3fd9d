import math

import torch

from curation.train.losses.centering import Centering, sinkhorn_knopp


def test_sinkhorn_symmetric_case_is_row_softmax():
    # exp(logits / T) = [[a, b], [b, a]] is already balanced: Q = row-normalised.
    logits = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    q = sinkhorn_knopp(logits, temperature=0.5)
    a, b = math.exp(2.0), 1.0
    expected = torch.tensor([[a, b], [b, a]]) / (a + b)
    assert torch.allclose(q, expected, atol=1e-6)


def test_sinkhorn_doubly_normalised():
    torch.manual_seed(0)
    batch, k = 64, 16
    logits = torch.randn(batch, k) * 0.3 + torch.linspace(0, 1, k)  # skewed prototypes
    q = sinkhorn_knopp(logits, temperature=0.1, iterations=50)
    assert torch.allclose(q.sum(dim=1), torch.ones(batch), atol=1e-5)
    assert torch.allclose(q.sum(dim=0), torch.full((k,), batch / k), atol=1e-3)
    # Three iterations already balance far better than a softmax does.
    q3 = sinkhorn_knopp(logits, temperature=0.1)
    soft = torch.softmax(logits / 0.1, dim=-1)
    target = torch.full((k,), batch / k)
    assert torch.allclose(q3.sum(dim=1), torch.ones(batch), atol=1e-5)
    assert (q3.sum(0) - target).abs().max() < 0.1 * (soft.sum(0) - target).abs().max()


def test_sinkhorn_is_stable_for_large_logits():
    logits = torch.tensor([[60.0, 0.0], [0.0, 60.0], [30.0, 30.0]])
    q = sinkhorn_knopp(logits, temperature=0.04)
    assert torch.isfinite(q).all()
    assert torch.allclose(q.sum(dim=1), torch.ones(3), atol=1e-5)


def test_centering_softmax_and_update():
    centering = Centering(num_prototypes=2, momentum=0.9)
    logits = torch.tensor([[1.0, 0.0], [3.0, 0.0]])
    probs = centering.softmax(logits, temperature=1.0)
    assert torch.allclose(probs, torch.softmax(logits, dim=-1))
    centering.update(logits)
    assert torch.allclose(centering.center, torch.tensor([[0.2, 0.0]]))
    probs = centering.softmax(torch.tensor([[0.2, 0.0]]), temperature=1.0)
    assert torch.allclose(probs, torch.tensor([[0.5, 0.5]]))


def _reference_sinkhorn(logits, temperature, iterations=3):
    """DINOv2's exp-domain algorithm (dino_clstoken_loss.py), single process."""
    q = torch.exp(logits.double() / temperature).t()
    k, b = q.shape
    q /= q.sum()
    for _ in range(iterations):
        q /= q.sum(dim=1, keepdim=True)
        q /= k
        q /= q.sum(dim=0, keepdim=True)
        q /= b
    return (q * b).t()


def test_sinkhorn_matches_reference_algorithm():
    torch.manual_seed(1)
    logits = torch.randn(24, 10)
    q = sinkhorn_knopp(logits, temperature=0.07)
    assert torch.allclose(q.double(), _reference_sinkhorn(logits, 0.07), atol=1e-5)


def test_sinkhorn_empty_rank():
    q = sinkhorn_knopp(torch.zeros(0, 8), temperature=0.1)
    assert q.shape == (0, 8)
