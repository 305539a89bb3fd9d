import torch

from curation.train.heads import DINOHead, WeightNormLinear


def test_head_shapes_and_layers():
    head = DINOHead(in_dim=32, num_prototypes=50, hidden_dim=64, bottleneck_dim=16)
    linears = [m for m in head.mlp if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(32, 64), (64, 64), (64, 16)]
    assert sum(isinstance(m, torch.nn.GELU) for m in head.mlp) == 2
    assert head(torch.randn(5, 32)).shape == (5, 50)
    assert torch.equal(head.last_layer.weight_g, torch.ones(50, 1))
    names = [n for n, _ in head.named_parameters()]
    assert "last_layer.weight_g" in names and "last_layer.weight_v" in names


def test_weight_norm_linear_rows_have_norm_g():
    layer = WeightNormLinear(4, 3)
    with torch.no_grad():
        layer.weight_g.copy_(torch.tensor([[1.0], [2.0], [0.5]]))
    eye = torch.eye(4)
    weight = layer(eye).t()  # [3, 4]: the effective weight
    assert torch.allclose(weight.norm(dim=1), torch.tensor([1.0, 2.0, 0.5]), atol=1e-6)


def test_logits_bounded_by_prototype_norms():
    # Input to the prototypes is L2-normalised and rows have norm 1: |logit| <= 1.
    head = DINOHead(in_dim=8, num_prototypes=20, hidden_dim=16, bottleneck_dim=4)
    logits = head(torch.randn(100, 8) * 100)
    assert logits.abs().max() <= 1.0 + 1e-5
