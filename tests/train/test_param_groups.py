import pytest
import torch

from curation.models.vit import build_vit
from curation.train.heads import DINOHead
from curation.train.param_groups import apply_schedule, build_param_groups, layer_id, param_settings


def test_layer_ids():
    assert layer_id("patch_embed.proj.weight", 12, True) == 0
    assert layer_id("cls_token", 12, True) == 0
    assert layer_id("blocks.3.attn.qkv.weight", 12, True) == 4
    assert layer_id("norm.weight", 12, True) == 13
    assert layer_id("mlp.0.weight", 12, False) == 13


def test_settings():
    s = param_settings("blocks.0.attn.qkv.weight", 2, True, layerwise_decay=0.9)
    assert s == {"lr_multiplier": pytest.approx(0.81), "wd_multiplier": 1.0, "is_last_layer": False}
    s = param_settings("patch_embed.proj.weight", 2, True, 0.9, patch_embed_lr_mult=0.2)
    assert s["lr_multiplier"] == pytest.approx(0.9**3 * 0.2)
    assert param_settings("blocks.1.ls1.gamma", 2, True)["wd_multiplier"] == 0.0
    assert param_settings("blocks.1.norm1.weight", 2, True)["wd_multiplier"] == 0.0
    assert param_settings("blocks.1.mlp.fc1.bias", 2, True)["wd_multiplier"] == 0.0
    assert param_settings("last_layer.weight_v", 2, False)["is_last_layer"]


def test_groups_cover_every_parameter_once_and_apply():
    vit = build_vit("vit_small", embed_dim=32, depth=2, num_heads=2, img_size=32, layerscale_init=1e-5)
    head = DINOHead(32, 10, 16, 8)
    groups = build_param_groups([(vit, True), (head, False)], 2, layerwise_decay=0.9, patch_embed_lr_mult=0.2)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(vit.parameters())) + len(list(head.parameters()))
    opt = torch.optim.AdamW(groups)
    apply_schedule(opt, lr=1.0, last_layer_lr=0.0, weight_decay=0.1)
    for g in opt.param_groups:
        expected_lr = 0.0 if g["is_last_layer"] else g["lr_multiplier"]
        assert g["lr"] == pytest.approx(expected_lr)
        assert g["weight_decay"] == pytest.approx(0.1 * g["wd_multiplier"])
