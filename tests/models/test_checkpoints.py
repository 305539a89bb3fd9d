"""Checkpoint loaders: every format against its reference implementation, offline,
with tiny random models saved to tmp_path."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from curation.errors import CheckpointError, ConfigError
from curation.models.checkpoints import (
    load_backbone,
    load_model,
    load_state,
    save_backbone,
    vit_from_timm,
)
from curation.models.vit import VisionTransformer

TOL = dict(rtol=1e-5, atol=1e-5)


def randomize(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Large random weights everywhere (norm scales around 1) so every tensor matters."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            is_norm_scale = ("norm" in name or "ln_" in name) and name.endswith("weight")
            param.normal_(mean=1.0 if is_norm_scale else 0.0, std=0.2)
    return module.eval()


def images(batch: int = 2, height: int = 32, width: int | None = None) -> torch.Tensor:
    generator = torch.Generator().manual_seed(7)
    return torch.randn(batch, 3, height, width or height, generator=generator)


def tiny_vit(seed: int = 0, **kwargs) -> VisionTransformer:
    config = dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4) | kwargs
    return randomize(VisionTransformer(**config), seed)


# --- timm -------------------------------------------------------------------------

TIMM_CASES = {
    "vit_small_patch14_dinov2": dict(img_size=28, embed_dim=64, depth=2, num_heads=4),
    "vit_small_patch14_reg4_dinov2": dict(img_size=28, embed_dim=64, depth=2, num_heads=4),
    "vit_giant_patch14_dinov2": dict(img_size=28, embed_dim=48, depth=2, num_heads=4),
    "vit_base_patch16_224": dict(img_size=32, embed_dim=64, depth=2, num_heads=4),
    "vit_base_patch16_clip_quickgelu_224": dict(img_size=32, embed_dim=64, depth=2, num_heads=4),
}


@pytest.mark.parametrize("arch", list(TIMM_CASES))
def test_timm_checkpoint_equals_timm(arch, tmp_path):
    import timm

    source_kwargs = TIMM_CASES[arch]
    reference = randomize(timm.create_model(arch, pretrained=False, num_classes=0, **source_kwargs))
    path = tmp_path / "timm.pth"
    torch.save(reference.state_dict(), path)
    model = load_model("timm", str(path), arch, source_kwargs=source_kwargs)
    x = images(2, source_kwargs["img_size"])
    torch.testing.assert_close(model(x), reference(x), **TOL)
    assert model.source.startswith("timm:")


def test_timm_layouts_and_features_map():
    import timm

    def converted(arch: str) -> VisionTransformer:
        return vit_from_timm(timm.create_model(arch, **TIMM_CASES[arch]))

    giant = converted("vit_giant_patch14_dinov2")
    assert giant.config["ffn"] == "swiglu" and giant.blocks[0].mlp.w3.in_features == 128
    clip = converted("vit_base_patch16_clip_quickgelu_224")
    assert clip.config["pre_norm"] and clip.config["act"] == "quick_gelu" and clip.config["norm_eps"] == 1e-5


def test_timm_registers_with_positions_fold_into_tokens():
    from timm.models.vision_transformer import VisionTransformer as TimmViT

    timm_vit = TimmViT(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4, reg_tokens=2, num_classes=0)
    reference = randomize(timm_vit)
    assert reference.pos_embed.shape[1] == 1 + 2 + 16  # registers have positions here
    model = vit_from_timm(reference)
    x = images()
    torch.testing.assert_close(model(x), reference(x), **TOL)
    features = model.forward_features(x)
    torch.testing.assert_close(features["x_norm_patchtokens"], reference.forward_features(x)[:, 3:], **TOL)


def test_positional_interpolation_matches_timm_dynamic_size():
    import timm

    kwargs = dict(img_size=56, embed_dim=64, depth=2, num_heads=4, num_classes=0, dynamic_img_size=True)
    reference = randomize(timm.create_model("vit_small_patch14_dinov2", **kwargs))
    # timm resizes with size=(gh, gw) and antialias: the ViT's offset-0 antialiased mode.
    model = vit_from_timm(reference, interpolate_offset=0.0, interpolate_antialias=True)
    for height, width in ((70, 98), (42, 28), (56, 56)):
        x = images(2, height, width)
        torch.testing.assert_close(model(x), reference(x), **TOL)
    # DINOv2's own mode (offset 0.1, no antialias) differs, but only slightly.
    dinov2_mode = vit_from_timm(reference)
    x = images(2, 70, 98)
    assert not torch.allclose(dinov2_mode(x), reference(x), **TOL)
    torch.testing.assert_close(dinov2_mode(images(2, 56)), reference(images(2, 56)), **TOL)


# --- open_clip ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def clip_configs(tmp_path_factory):
    import open_clip

    folder = tmp_path_factory.mktemp("clip_cfg")
    text = dict(context_length=8, vocab_size=64, width=32, heads=2, layers=1)
    vision = dict(image_size=32, layers=2, width=64, patch_size=8, head_width=16)
    configs = {
        "tiny-clip-test": dict(embed_dim=24, vision_cfg=vision, text_cfg=text),
        "tiny-clip-quickgelu-ls-test": dict(
            embed_dim=24, quick_gelu=True, vision_cfg=vision | {"ls_init_value": 0.1}, text_cfg=text
        ),
    }
    for name, cfg in configs.items():
        (folder / f"{name}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(folder)
    return list(configs)


@pytest.mark.parametrize("index", [0, 1])
def test_open_clip_tower_equals_open_clip(clip_configs, index, tmp_path):
    import open_clip

    name = clip_configs[index]
    reference = randomize(open_clip.create_model(name, pretrained=None))
    path = tmp_path / "clip.pt"
    torch.save(reference.state_dict(), path)
    model = load_model("open_clip", str(path), name)
    x = images()
    torch.testing.assert_close(model(x), reference.encode_image(x), **TOL)
    assert model.config["pre_norm"] and model.config["out_dim"] == 24
    assert model.config["act"] == ("quick_gelu" if index else "gelu")
    assert model.config["layerscale_init"] == (1e-5 if index else None)


def test_open_clip_mismatch_raises(clip_configs, tmp_path):
    import open_clip

    state = open_clip.create_model(clip_configs[0], pretrained=None).state_dict()
    del state["visual.ln_post.weight"]
    path = tmp_path / "broken.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="ln_post"):
        load_model("open_clip", str(path), clip_configs[0])


# --- DINOv2, DINO, iBOT -------------------------------------------------------------

OFFICIAL_VITS14_KEYS = {  # dinov2_vits14_pretrain.pth, with depth cut to 1
    "cls_token",
    "pos_embed",
    "mask_token",
    "patch_embed.proj.weight",
    "patch_embed.proj.bias",
    "blocks.0.norm1.weight",
    "blocks.0.norm1.bias",
    "blocks.0.attn.qkv.weight",
    "blocks.0.attn.qkv.bias",
    "blocks.0.attn.proj.weight",
    "blocks.0.attn.proj.bias",
    "blocks.0.ls1.gamma",
    "blocks.0.norm2.weight",
    "blocks.0.norm2.bias",
    "blocks.0.mlp.fc1.weight",
    "blocks.0.mlp.fc1.bias",
    "blocks.0.mlp.fc2.weight",
    "blocks.0.mlp.fc2.bias",
    "blocks.0.ls2.gamma",
    "norm.weight",
    "norm.bias",
}


def test_parameter_names_follow_official_dinov2():
    model = VisionTransformer(img_size=28, patch_size=14, embed_dim=64, depth=1, num_heads=4, layerscale_init=1e-5)
    assert set(model.state_dict()) == OFFICIAL_VITS14_KEYS
    giant = VisionTransformer(
        img_size=28,
        patch_size=14,
        embed_dim=64,
        depth=1,
        num_heads=4,
        ffn="swiglu",
        layerscale_init=1e-5,
        num_register_tokens=4,
    )
    swiglu = {k.replace("fc1", "w12").replace("fc2", "w3") for k in OFFICIAL_VITS14_KEYS}
    assert set(giant.state_dict()) == swiglu | {"register_tokens"}


def chunked(state: dict, chunks: int, depth: int) -> dict:
    """BlockChunk layout: blocks.<chunk>.<global index>."""
    per = depth // chunks
    out = {}
    for key, value in state.items():
        if key.startswith("blocks."):
            index = int(key.split(".")[1])
            key = f"blocks.{index // per}.{key.split('.', 1)[1]}"
        out[key] = value
    return out


@pytest.mark.parametrize("swiglu", [False, True])
def test_dinov2_released_and_training_checkpoints(swiglu, tmp_path):
    kwargs = dict(patch_size=14, img_size=28, depth=4, layerscale_init=1e-5, num_register_tokens=2)
    kwargs["ffn"] = "swiglu" if swiglu else "mlp"
    teacher, student = tiny_vit(1, **kwargs), tiny_vit(2, **kwargs)
    released = tmp_path / "released.pth"
    torch.save(teacher.state_dict(), released)
    x = images(2, 28)
    model = load_model("dinov2", str(released), num_heads=4)
    torch.testing.assert_close(model(x), teacher(x), **TOL)
    assert model.config["num_register_tokens"] == 2 and model.config["ffn"] == kwargs["ffn"]
    # as DINOv2's hub models with registers
    assert (model.config["interpolate_offset"], model.config["interpolate_antialias"]) == (0.0, True)

    training = {"model": {}, "iteration": torch.tensor(10)}
    for prefix, net in (("teacher", teacher), ("student", student)):
        for key, value in chunked(net.state_dict(), chunks=2, depth=4).items():
            training["model"][f"{prefix}.backbone.{key}"] = value
        training["model"][f"{prefix}.dino_head.last_layer.weight"] = torch.zeros(3, 3)
    path = tmp_path / "training.pth"
    torch.save(training, path)
    torch.testing.assert_close(load_model("dinov2", str(path), num_heads=4)(x), teacher(x), **TOL)
    torch.testing.assert_close(load_model("dinov2", str(path), num_heads=4, which="student")(x), student(x), **TOL)


def test_dinov2_arch_sets_heads_and_checks_dims(tmp_path):
    path = tmp_path / "s.pth"
    reference = tiny_vit(embed_dim=384, num_heads=6, depth=12, img_size=28, patch_size=14)
    torch.save(reference.state_dict(), path)
    model = load_model("dinov2", str(path), "vit_small")
    assert model.config["num_heads"] == 6
    torch.testing.assert_close(model(images(1, 28)), reference(images(1, 28)), rtol=1e-4, atol=1e-4)
    assert load_model("dinov2", str(path)).config["num_heads"] == 6  # 384 / 64
    with pytest.raises(CheckpointError, match="vit_base"):
        load_model("dinov2", str(path), "vit_base")


@pytest.mark.parametrize("kind", ["dino", "ibot"])
def test_dino_and_ibot_checkpoints(kind, tmp_path):
    teacher, student = tiny_vit(3), tiny_vit(4)  # no LayerScale, no registers
    assert "blocks.0.ls1.gamma" not in teacher.state_dict()

    def backbone(net, prefix):
        state = {f"{prefix}{k}": v for k, v in net.state_dict().items() if k != "mask_token"}
        if kind == "ibot":
            state[f"{prefix}masked_embed"] = net.mask_token.detach().clone().reshape(1, -1) + 1.0
        state[f"{prefix.replace('backbone.', '')}head.mlp.0.weight"] = torch.zeros(2, 2)
        return state

    checkpoint = {
        "teacher": backbone(teacher, "backbone."),
        "student": backbone(student, "module.backbone."),
        "epoch": torch.tensor(3),
    }
    path = tmp_path / f"{kind}.pth"
    torch.save(checkpoint, path)
    x = images()
    model = load_model(kind, str(path), num_heads=4)
    torch.testing.assert_close(model(x), teacher(x), **TOL)
    torch.testing.assert_close(load_model(kind, str(path), num_heads=4, which="student")(x), student(x), **TOL)
    if kind == "ibot":
        torch.testing.assert_close(model.mask_token, teacher.mask_token + 1.0)


class Payload:
    """A class a checkpoint must never make us instantiate."""


def test_pickled_objects_are_refused_but_dino_args_are_read(tmp_path):
    path = tmp_path / "args.pth"
    teacher = tiny_vit()
    torch.save({"args": argparse.Namespace(arch="vit_small", lr=0.1), "teacher": teacher.state_dict()}, path)
    x = images()
    torch.testing.assert_close(load_model("dino", str(path), num_heads=4)(x), teacher(x), **TOL)
    torch.save({"args": Payload(), "teacher": teacher.state_dict()}, path)
    with pytest.raises(CheckpointError, match="pickled objects"):
        load_model("dino", str(path))


def test_mismatches_are_named():
    model = tiny_vit()
    state = model.state_dict()
    del state["blocks.1.norm2.bias"]
    state["blocks.0.attn.extra"] = torch.zeros(1)
    state["norm.weight"] = torch.zeros(65)
    with pytest.raises(CheckpointError) as err:
        load_state(model, state)
    message = str(err.value)
    assert "missing keys: blocks.1.norm2.bias" in message
    assert "unexpected keys: blocks.0.attn.extra" in message
    assert "norm.weight (65,) in the checkpoint, (64,) in the model" in message


# --- TorchScript, own format, random --------------------------------------------------


def test_torchscript_model(tmp_path):
    reference = tiny_vit(num_register_tokens=1)
    x = images()
    with pytest.warns(torch.jit.TracerWarning):  # the size branches become constants
        traced = torch.jit.trace(reference, x)
    path = tmp_path / "model.pt"
    traced.save(str(path))
    model = load_model("torchscript", str(path))
    torch.testing.assert_close(model(x), reference(x), **TOL)
    torch.save(reference.state_dict(), tmp_path / "weights.pth")
    with pytest.raises(CheckpointError, match="not a TorchScript archive"):
        load_model("torchscript", str(tmp_path / "weights.pth"))


def test_own_backbone_format_round_trip(tmp_path):
    reference = tiny_vit(ffn="swiglu", layerscale_init=1e-5, num_register_tokens=2, pre_norm=True, out_dim=16)
    path = tmp_path / "teacher.safetensors"
    save_backbone(reference, path)
    model = load_backbone(path)
    assert model.config == reference.config
    x = images()
    torch.testing.assert_close(model(x), reference(x), rtol=0, atol=0)
    torch.testing.assert_close(load_model("curation", str(path))(x), reference(x), rtol=0, atol=0)
    assert [p.name for p in tmp_path.iterdir()] == ["teacher.safetensors"]  # no temporary left

    from safetensors.torch import save_file

    save_file({"w": torch.zeros(1)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(CheckpointError, match="not a curation-vit backbone"):
        load_backbone(tmp_path / "plain.safetensors")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_backbone(tmp_path / "missing.safetensors")


def test_random_model_is_seeded_and_labelled():
    a = load_model("random", None, "vit_small", img_size=28, patch_size=14, depth=1)
    b = load_model("random", None, "vit_small", img_size=28, patch_size=14, depth=1)
    c = load_model("random", None, "vit_small", img_size=28, patch_size=14, depth=1, seed=1)
    torch.testing.assert_close(a.pos_embed, b.pos_embed, rtol=0, atol=0)
    assert not torch.equal(a.pos_embed, c.pos_embed)
    assert "random" in a.source and not a.training
    assert a(images(2, 28)).shape == (2, 384)


def test_load_model_arguments():
    with pytest.raises(ConfigError, match="unknown model kind"):
        load_model("clip", "x.pth")
    with pytest.raises(ConfigError, match="needs a local checkpoint path"):
        load_model("dinov2", None)
    with pytest.raises(ConfigError, match="needs an arch"):
        load_model("timm", "x.pth")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model("dinov2", "/nonexistent/dinov2_vits14_pretrain.pth")
