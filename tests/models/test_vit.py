"""The ViT: architectures, features, packing, masks, stochastic depth, naive mode."""

from __future__ import annotations

import itertools

import pytest
import torch

from curation.errors import ConfigError
from curation.models.layers import Block, drop_add_residual
from curation.models.vit import ARCHS, VisionTransformer, build_vit, count_params, flops_per_image, parse_arch

TINY = dict(img_size=32, patch_size=8, embed_dim=64, depth=3, num_heads=4)


def tiny(seed: int = 0, **kwargs) -> VisionTransformer:
    """A tiny ViT with large random weights, so that every path matters."""
    torch.manual_seed(seed)
    model = VisionTransformer(**{**TINY, **kwargs})
    with torch.no_grad():
        for name, param in model.named_parameters():
            is_norm_scale = "norm" in name and name.endswith("weight")
            param.normal_(mean=1.0 if is_norm_scale else 0.0, std=0.3)
    return model


def images(batch: int, size: int = 32, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", list(ARCHS))
def test_architecture_table(name):
    embed_dim, depth, heads, ffn = ARCHS[name]
    model = build_vit(name, depth=1, img_size=28, patch_size=14)
    assert (model.embed_dim, model.config["num_heads"], model.config["ffn"]) == (embed_dim, heads, ffn)
    with torch.device("meta"):
        assert len(build_vit(name, patch_size=14).blocks) == depth


def test_named_sizes():
    assert ARCHS["vit_huge"] == (1280, 32, 16, "mlp")
    assert ARCHS["vit_giant2"] == (1536, 40, 24, "swiglu")
    giant = build_vit("vit_giant2_14", depth=1, img_size=28)
    assert giant.patch_size == 14
    assert tuple(giant.blocks[0].mlp.w12.weight.shape) == (2 * 4096, 1536)
    assert tuple(giant.blocks[0].mlp.w3.weight.shape) == (1536, 4096)
    assert build_vit("vit_small_patch14", depth=1).patch_size == 14
    assert build_vit("vit_base16", depth=1).patch_size == 16
    assert parse_arch("vit_giant2") == ("vit_giant2", None)
    assert parse_arch("vit_giant2_14") == ("vit_giant2", 14)
    with pytest.raises(ConfigError, match="vit_tiny"):
        build_vit("vit_tiny")
    with pytest.raises(ConfigError, match="num_heads"):
        VisionTransformer(embed_dim=64, num_heads=5, depth=1)


def test_full_size_counts_on_meta_device():
    with torch.device("meta"):
        huge = build_vit("vit_huge", patch_size=16, img_size=224)
        giant = build_vit("vit_giant2", patch_size=14, img_size=518)
    assert flops_per_image(huge, 224) == pytest.approx(254.6e9, rel=1e-3)
    assert count_params(huge) == pytest.approx(631e6, rel=1e-2)
    assert count_params(giant) == pytest.approx(1.136e9, rel=1e-2)


def test_init_weights():
    model = VisionTransformer(**TINY, layerscale_init=1e-5, num_register_tokens=2)
    qkv = model.blocks[0].attn.qkv
    # trunc_normal_(std=0.02) cuts at +-2 absolute, as in DINOv2 and timm.
    assert 0.015 < qkv.weight.std().item() < 0.025
    assert torch.all(qkv.bias == 0) and torch.all(model.mask_token == 0)
    assert torch.all(model.blocks[1].ls2.gamma == 1e-5)
    assert model.cls_token.abs().max() < 1e-4 and model.register_tokens.abs().max() < 1e-4


def test_feature_dict_layout_and_embedding():
    model = tiny(num_register_tokens=3).eval()
    x = images(2)
    out = model.forward_features(x)
    assert out["x_norm_clstoken"].shape == (2, 64)
    assert out["x_norm_regtokens"].shape == (2, 3, 64)
    assert out["x_norm_patchtokens"].shape == (2, 16, 64)
    assert out["x_prenorm"].shape == (2, 20, 64)
    assert out["masks"] is None
    normed = model.norm(out["x_prenorm"])
    torch.testing.assert_close(out["x_norm_patchtokens"], normed[:, 4:])
    torch.testing.assert_close(model(x), out["x_norm_clstoken"])
    assert isinstance(model(x, is_training=True), dict)


def test_head_projection_and_pre_norm():
    model = tiny(pre_norm=True, out_dim=24).eval()
    x = images(2)
    cls = model.forward_features(x)["x_norm_clstoken"]
    torch.testing.assert_close(model(x), cls @ model.head.weight.T)
    assert model(x).shape == (2, 24)
    model.norm_pre.weight.data.mul_(2.0)
    assert not torch.allclose(model(x), cls @ model.head.weight.T)


@pytest.mark.parametrize("registers", [0, 2])
def test_packing_equals_separate_passes(registers):
    model = tiny(num_register_tokens=registers).eval()
    big, small = images(3, 32, seed=1), images(5, 16, seed=2)
    masks = torch.rand(3, 16, generator=torch.Generator().manual_seed(3)) < 0.4
    for group_masks in ([None, None], [masks, None]):
        packed = model.forward_features_list([big, small], group_masks)
        separate = [model.forward_features(big, group_masks[0]), model.forward_features(small)]
        for p, s in zip(packed, separate, strict=False):
            for key in ("x_norm_clstoken", "x_norm_regtokens", "x_norm_patchtokens", "x_prenorm"):
                torch.testing.assert_close(p[key], s[key], rtol=1e-5, atol=1e-5)
        assert packed[0]["masks"] is group_masks[0]


def test_packing_gradients_equal_separate_passes():
    model = tiny(layerscale_init=0.5).train()
    big, small = images(2, 32, seed=1), images(3, 16, seed=2)
    masks = torch.zeros(2, 16, dtype=torch.bool)
    masks[:, :5] = True

    def grads(packed: bool) -> dict[str, torch.Tensor]:
        model.zero_grad()
        if packed:
            out = model([big, small], [masks, None], is_training=True)
        else:
            out = [model.forward_features(big, masks), model.forward_features(small)]
        loss = sum((o["x_norm_patchtokens"] ** 2).mean() + o["x_norm_clstoken"].sum() for o in out)
        loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    packed, separate = grads(True), grads(False)
    assert packed.keys() == separate.keys() and "mask_token" in packed
    for name in packed:
        torch.testing.assert_close(packed[name], separate[name], rtol=1e-4, atol=1e-5)


def test_masks_replace_patch_embeddings():
    model = tiny().eval()
    a, b = images(1, seed=1), images(1, seed=2)
    every = torch.ones(1, 16, dtype=torch.bool)
    # With every patch masked the image no longer matters.
    torch.testing.assert_close(model(a, every), model(b, every))
    assert not torch.allclose(model(a), model(b))
    # Masking a patch equals feeding the mask token as that patch's embedding.
    masks = torch.zeros(1, 16, dtype=torch.bool)
    masks[0, 5] = True
    tokens = model.prepare_tokens(a, masks)
    plain = model.prepare_tokens(a)
    expected = model.mask_token[0] + model.pos_embed[0, 6]
    torch.testing.assert_close(tokens[0, 6], expected)
    torch.testing.assert_close(torch.cat([tokens[:, :6], tokens[:, 7:]], 1), torch.cat([plain[:, :6], plain[:, 7:]], 1))


def test_naive_mode_equals_efficient_in_eval():
    model = tiny(num_register_tokens=1, ffn="swiglu", layerscale_init=0.3).eval()
    big, small = images(3, 32, seed=1), images(4, 24, seed=2)
    masks = torch.rand(3, 16, generator=torch.Generator().manual_seed(0)) < 0.5
    efficient = model.forward_features_list([big, small], [masks, None])
    model.naive = True
    assert all(block.naive and block.attn.naive for block in model.blocks)
    naive = model.forward_features_list([big, small], [masks, None])
    for e, n in zip(efficient, naive, strict=False):
        torch.testing.assert_close(e["x_prenorm"], n["x_prenorm"], rtol=1e-4, atol=1e-4)


def row_counter(model: VisionTransformer) -> list[int]:
    """Rows entering every attention and FFN branch, appended by forward hooks."""
    rows: list[int] = []
    for block in model.blocks:
        for branch in (block.attn, block.mlp):
            branch.register_forward_hook(lambda mod, args, out: rows.append(args[0].shape[0]))
    return rows


def test_stochastic_depth_skips_dropped_samples():
    model = tiny(depth=2, drop_path_rate=0.5).train()
    rows = row_counter(model)
    model([images(8, 32), images(4, 16)], is_training=True)
    # Each branch sees 4 of 8 large crops (17 tokens) and 2 of 4 small ones (5 tokens).
    assert rows == [4 * 17 + 2 * 5] * 4
    rows.clear()
    model.naive = True  # computed then masked: every row goes through
    model([images(8, 32), images(4, 16)], is_training=True)
    assert rows == [8 * 17] * 4 + [4 * 5] * 4  # and one pass per crop group
    rows.clear()
    model.naive = False
    model.eval()
    model(images(8, 32))
    assert rows == [8 * 17] * 4


def test_stochastic_depth_rates():
    assert [b.drop_path for b in tiny(depth=3, drop_path_rate=0.4).blocks] == [0.4] * 3
    rates = [b.drop_path for b in tiny(depth=3, drop_path_rate=0.4, drop_path_uniform=False).blocks]
    assert rates == pytest.approx([0.0, 0.2, 0.4])


def drop_path_case() -> tuple[Block, tuple, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    block = Block(16, 4, 32, layerscale_init=0.7, drop_path=0.25)
    with torch.no_grad():
        for param in block.parameters():
            param.normal_(std=0.5)
    groups = ((4, 3), (2, 5))  # keeps int(4 * 0.75) = 3 and int(2 * 0.75) = 1 samples
    x = torch.randn(4 * 3 + 2 * 5, 16)
    with torch.no_grad():
        full = block._attn_branch(x, groups)
    return block, groups, x, full


def test_drop_add_residual_draws():
    block, groups, x, full = drop_path_case()
    sample_of_row = torch.tensor([0] * 3 + [1] * 3 + [2] * 3 + [3] * 3 + [4] * 5 + [5] * 5)
    row_scale = torch.tensor([4 / 3] * 12 + [2.0] * 10)[:, None]
    with torch.no_grad():
        for _ in range(50):
            out = drop_add_residual(x, groups, block._attn_branch, 0.25)
            kept_rows = (out != x).any(dim=1)
            kept = torch.zeros(6, dtype=torch.bool).index_put_((sample_of_row,), kept_rows, accumulate=True)
            assert torch.equal(kept[sample_of_row], kept_rows)  # whole samples, never parts
            assert kept[:4].sum() == 3 and kept[4:].sum() == 1
            # a kept sample gets its full residual, scaled by batch / kept
            torch.testing.assert_close(out, x + kept_rows[:, None] * row_scale * full)


def test_drop_add_residual_expectation_is_exact(monkeypatch):
    """Averaged over every permutation randperm can draw (4! x 2!), the output is
    exactly the deterministic x + branch(x)."""
    block, groups, x, full = drop_path_case()
    draws = [
        torch.tensor(p)
        for pair in itertools.product(itertools.permutations(range(4)), itertools.permutations(range(2)))
        for p in pair
    ]
    monkeypatch.setattr(torch, "randperm", lambda n, device=None: draws.pop(0))
    total = torch.zeros_like(x)
    with torch.no_grad():
        for _ in range(24 * 2):
            total += drop_add_residual(x, groups, block._attn_branch, 0.25)
    assert not draws
    torch.testing.assert_close(total / 48, x + full)


def test_stochastic_depth_gradients_flow_only_through_kept():
    model = tiny(depth=1, drop_path_rate=0.5, layerscale_init=1.0).train()
    model(images(4), is_training=True)["x_norm_clstoken"].sum().backward()
    assert model.blocks[0].attn.qkv.weight.grad.abs().sum() > 0


def test_positional_embedding_interpolation():
    model = tiny().eval()
    assert model.interpolate_pos_embed((4, 4)) is model.pos_embed
    pos = model.interpolate_pos_embed((6, 8))
    assert pos.shape == (1, 1 + 48, 64)
    torch.testing.assert_close(pos[:, 0], model.pos_embed[:, 0])
    with torch.no_grad():  # a constant field stays constant under bicubic resizing
        model.pos_embed[:, 1:] = 0.25
    torch.testing.assert_close(model.interpolate_pos_embed((7, 5))[:, 1:], torch.full((1, 35, 64), 0.25))
    assert model(torch.randn(2, 3, 48, 64)).shape == (2, 64)


def test_bf16_autocast_forward():
    model = tiny(num_register_tokens=1).eval()
    x = images(2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model.forward_features(x)
    assert out["x_prenorm"].dtype == torch.bfloat16
    torch.testing.assert_close(out["x_norm_clstoken"].float(), model(x), rtol=0.1, atol=0.15)
