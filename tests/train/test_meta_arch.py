import pytest
import torch

from curation.models.layers import drop_add_residual, masked_drop_residual
from curation.train.loop import build_optimizer, run_schedules, train_step
from curation.train.meta_arch import SSLMetaArch
from tests.train.helpers import make_batch, tiny_config


def _meta(cfg, naive=False):
    torch.manual_seed(0)
    meta = SSLMetaArch(cfg).train()
    meta.student["backbone"].naive = naive
    meta.teacher["backbone"].naive = naive
    return meta


def _grads(meta):
    return {n: p.grad.clone() for n, p in meta.student.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("separate", [True, False])
def test_packed_forward_equals_separate_forwards(separate):
    cfg = tiny_config(heads={"separate_ibot_head": separate})
    packed, naive = _meta(cfg), _meta(cfg, naive=True)
    batch = make_batch(0)
    losses = packed.forward_backward(batch, 0.05)
    reference = naive.forward_backward(batch, 0.05)
    assert losses.keys() == reference.keys()
    for name in losses:
        assert losses[name] == pytest.approx(reference[name], rel=1e-5, abs=1e-6), name
    got, expected = _grads(packed), _grads(naive)
    assert got.keys() == expected.keys() and len(got) > 10
    for name in got:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-4, atol=1e-6, msg=name)


def test_loss_terms_add_up():
    cfg = tiny_config(loss={"koleo_weight": 0.5, "ibot_weight": 2.0})
    losses = _meta(cfg).forward_backward(make_batch(1), 0.04)
    assert losses["dino"] == pytest.approx(losses["dino_global"] + losses["dino_local"], rel=1e-6)
    expected = losses["dino"] + 2.0 * losses["ibot"] + 0.5 * losses["koleo"]
    assert losses["total"] == pytest.approx(expected, rel=1e-6)


def test_centering_mode_updates_centres():
    cfg = tiny_config(loss={"centering": "centering"})
    meta = _meta(cfg)
    assert torch.count_nonzero(meta.dino_center.center) == 0
    meta.forward_backward(make_batch(0), 0.04)
    assert torch.count_nonzero(meta.dino_center.center) > 0
    assert torch.count_nonzero(meta.ibot_center.center) > 0


def test_teacher_starts_as_student_without_drop_path():
    meta = _meta(tiny_config(vit={"drop_path_rate": 0.3}))
    for (name, s), (_, t) in zip(meta.student.named_parameters(), meta.teacher.named_parameters(), strict=False):
        assert torch.equal(s, t) and not t.requires_grad, name
    assert all(b.drop_path == 0.3 for b in meta.student["backbone"].blocks)
    assert all(b.drop_path == 0.0 for b in meta.teacher["backbone"].blocks)
    assert not meta.teacher.training and meta.student.training


def test_ema_update():
    meta = _meta(tiny_config())
    with torch.no_grad():
        for p in meta.student.parameters():
            p.add_(1.0)
    before = [t.clone() for t in meta.teacher.parameters()]
    meta.update_teacher(0.75)
    for b, t, s in zip(before, meta.teacher.parameters(), meta.student.parameters(), strict=False):
        torch.testing.assert_close(t, 0.75 * b + 0.25 * s)


def test_step_freezes_last_layer_and_updates_the_rest():
    cfg = tiny_config()
    meta = _meta(cfg)
    optimizer = build_optimizer(cfg, meta)
    values = run_schedules(cfg, 1).at(1)  # lr > 0, prototypes still frozen
    assert values["lr"] > 0 and values["last_layer_lr"] == 0
    before = {n: p.clone() for n, p in meta.student.named_parameters()}
    losses, norms = train_step(meta, optimizer, make_batch(0), values, 3.0)
    assert set(norms) == {"backbone", "dino_head", "ibot_head"}
    for name, p in meta.student.named_parameters():
        changed = not torch.equal(p, before[name])
        assert changed != ("last_layer" in name), name


def test_efficient_drop_path_has_the_right_expectation():
    torch.manual_seed(0)
    groups = ((6, 3), (10, 2))
    x = torch.randn(6 * 3 + 10 * 2, 4)
    weight = torch.randn(4, 4)
    calls = []

    def branch(rows, sub_groups):
        calls.append(sum(b for b, _ in sub_groups))
        return rows @ weight

    full = x + branch(x, groups)
    residual = (full - x).abs()
    n = 3000
    calls.clear()
    mean = sum(drop_add_residual(x, groups, branch, 0.4) for _ in range(n)) / n
    # Per entry the estimator's std is |residual| * sqrt(b/kept - 1) / sqrt(n) <= |residual| / sqrt(n).
    assert ((mean - full).abs() <= 5 * residual / n**0.5 + 1e-5).all()
    assert set(calls) == {int(6 * 0.6) + int(10 * 0.6)}  # the branch only runs on kept samples
    naive = sum(masked_drop_residual(x, groups, branch, 0.4) for _ in range(n)) / n
    assert ((naive - full).abs() <= 5 * residual / n**0.5 + 1e-5).all()
    assert not torch.allclose(mean, full, atol=1e-3)  # a real estimate, not the deterministic path
