"""SSCD descriptor: architecture, checkpoint formats, preprocessing and batched describing."""

from __future__ import annotations

import io

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

from curation.errors import CheckpointError
from curation.models import sscd
from curation.preprocess import PreprocessSpec


@pytest.fixture(scope="module")
def model() -> sscd.SSCD:
    torch.manual_seed(0)
    return sscd.SSCD("resnet18", dims=32).eval()


@pytest.fixture(scope="module")
def batch() -> torch.Tensor:
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def _jpeg(array: np.ndarray, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def test_descriptors_are_unit_vectors_of_dims(model, batch):
    with torch.inference_mode():
        out = model(batch)
    assert out.shape == (2, 32)
    assert torch.allclose(out.norm(dim=1), torch.ones(2), atol=1e-5)


def test_resnet50_matches_the_official_torchvision_layout():
    state = sscd.SSCD("resnet50").state_dict()
    assert all(k.startswith("backbone.") for k in state)
    assert state["backbone.fc.weight"].shape == (512, 2048) and state["backbone.fc.bias"].shape == (512,)
    assert "backbone.conv1.weight" in state and not any("avgpool" in k for k in state)


def test_gem_pooling():
    x = torch.arange(1.0, 5.0).reshape(1, 1, 2, 2)
    assert torch.allclose(sscd.GeM(1.0)(x), x.mean(dim=(2, 3)))
    assert torch.allclose(sscd.GeM(3.0)(x), (x.pow(3).mean() ** (1 / 3)).reshape(1, 1))


def test_state_dict_round_trip(tmp_path, model, batch):
    path = tmp_path / "sscd.pt"
    sscd.save(model, path)
    loaded, source = sscd.load(path, "resnet18", 32)
    assert source == f"state_dict:{path}"
    with torch.inference_mode():
        assert torch.equal(loaded(batch), model(batch))


def test_official_style_files_without_prefix_or_wrapped_load(tmp_path, model, batch):
    bare = {k.removeprefix("backbone."): v for k, v in model.state_dict().items()}
    torch.save(bare, tmp_path / "bare.pt")
    torch.save({"state_dict": model.state_dict()}, tmp_path / "wrapped.pt")
    for name in ("bare.pt", "wrapped.pt"):
        loaded, _ = sscd.load(tmp_path / name, "resnet18", 32)
        with torch.inference_mode():
            assert torch.equal(loaded(batch), model(batch))


def test_wrong_shapes_and_keys_name_the_mismatch(tmp_path, model):
    state = dict(model.state_dict())
    state["backbone.fc.weight"] = torch.zeros(16, 512)
    state["backbone.extra.weight"] = torch.zeros(1)
    del state["backbone.layer1.0.conv1.weight"]
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError) as err:
        sscd.load(tmp_path / "bad.pt", "resnet18", 32)
    message = str(err.value)
    assert "backbone.fc.weight (16, 512) in the checkpoint, (32, 512) in the model" in message
    assert "missing keys: backbone.layer1.0.conv1.weight" in message
    assert "unexpected keys: backbone.extra.weight" in message


def test_a_resnet50_file_does_not_load_into_resnet18(tmp_path):
    torch.save(sscd.SSCD("resnet50").state_dict(), tmp_path / "r50.pt")
    with pytest.raises(CheckpointError, match="shape mismatches"):
        sscd.load(tmp_path / "r50.pt", "resnet18", 512)


class Payload:
    """A class a checkpoint must never make us instantiate."""


def test_pickled_objects_and_garbage_are_refused_never_unpickled(tmp_path):
    torch.save({"args": Payload()}, tmp_path / "pickled.pt")
    with pytest.raises(CheckpointError, match="never unpickled"):
        sscd.load(tmp_path / "pickled.pt", "resnet18", 32)
    (tmp_path / "garbage.pt").write_bytes(b"\x80\x04 this is not a checkpoint")
    with pytest.raises(CheckpointError):
        sscd.load(tmp_path / "garbage.pt", "resnet18", 32)
    torch.save({"weights": [1, 2, 3]}, tmp_path / "lists.pt")
    with pytest.raises(CheckpointError, match="not an SSCD state dict"):
        sscd.load(tmp_path / "lists.pt", "resnet18", 32)
    with pytest.raises(CheckpointError, match="does not exist"):
        sscd.load(tmp_path / "missing.pt", "resnet18", 32)


def test_torchscript_export_loads_through_jit(tmp_path, model, batch):
    path = tmp_path / "sscd_tiny.torchscript.pt"
    torch.jit.trace(model, batch).save(str(path))
    assert sscd.is_torchscript(path)
    scripted, source = sscd.load(path, "resnet50", 32)  # backbone is irrelevant for TorchScript
    assert source == f"torchscript:{path}"
    with torch.inference_mode():
        assert torch.allclose(scripted(batch), model(batch), atol=1e-5)
    with pytest.raises(CheckpointError, match="dims=512"):
        sscd.load(path, "resnet50", 512)


def test_random_init_is_seeded(batch):
    a, source = sscd.load(None, "resnet18", 16, seed=3)
    b, _ = sscd.load(None, "resnet18", 16, seed=3)
    assert source == sscd.RANDOM_INIT
    with torch.inference_mode():
        assert torch.equal(a(batch), b(batch))


def _spec(mode: str, size: int, exact_thumb: bool = False) -> sscd.FeatureSpec:
    model = PreprocessSpec(size, mode=mode, interpolation="bilinear", draft=True)
    return sscd.FeatureSpec(model, thumb_size=16, exact_thumb=exact_thumb)


def test_preprocess_modes():
    img = _jpeg(skimage.data.chelsea())  # 451 x 300
    square = sscd.decode(img, _spec("square", 64))
    assert square.pixels.shape == (64, 64, 3) and square.thumb is None  # thumbnails come from the batch
    assert (square.width, square.height) == (451, 300)
    short = sscd.decode(img, _spec("short_edge", 72, exact_thumb=True))
    assert short.pixels.shape == (72, 108, 3) and short.thumb.shape == (16, 16)


def test_describe_batches_and_reports_failures(model):
    spec = _spec("short_edge", 48)
    blobs = [
        _jpeg(skimage.data.chelsea()),
        b"not an image",
        None,
        _jpeg(skimage.data.astronaut()),
        _jpeg(skimage.data.chelsea())[:200],
    ]
    embed = sscd.DescriptorModel(model, "cpu", batch_size=2, dims=32, threads=2)
    thumbs, desc, width, height, reasons, errors = sscd.describe(blobs, embed, spec)
    assert reasons == [
        None,
        "failed_decode:unidentified_image",
        "failed_decode:missing_image",
        None,
        "failed_decode:broken_image",
    ]
    assert errors[1] == "not an image format Pillow can read"
    assert thumbs.shape == (2, 16, 16) and desc.shape == (2, 32)
    assert width.tolist() == [451, 512] and height.tolist() == [300, 512]
    # Batching by shape gives the same descriptors as one image at a time.
    single = sscd.DescriptorModel(model, "cpu", batch_size=1, dims=32)
    assert np.allclose(single([sscd.decode(blobs[3], spec).pixels])[0], desc[1], atol=1e-5)


class _Broken(torch.nn.Module):
    """Zero descriptors for dark images, NaN for the others."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dark = (x.mean(dim=(1, 2, 3)) < 0).float()[:, None]
        return torch.where(dark > 0, torch.zeros(len(x), 4), torch.full((len(x), 4), float("nan")))


def test_nan_and_zero_descriptors_are_rejected_with_a_reason():
    spec = _spec("square", 32)
    blobs = [_jpeg(np.zeros((40, 40, 3), np.uint8)), _jpeg(np.full((40, 40, 3), 255, np.uint8))]
    thumbs, desc, _, _, reasons, errors = sscd.describe(blobs, sscd.DescriptorModel(_Broken(), "cpu", dims=4), spec)
    assert reasons == ["failed_descriptor:zero", "failed_descriptor:nan"]
    assert errors == ["the descriptor is zero", "the descriptor is nan"]
    assert thumbs.shape == (0, 16, 16) and desc.shape == (0, 4)


def test_probe_descriptor_dim_of_torchscript_and_state_dict_files(tmp_path, model, batch):
    path = tmp_path / "sscd.torchscript.pt"
    torch.jit.trace(model, batch).save(str(path))
    assert sscd.probe_descriptor_dim(path) == 32
    sscd.save(model, tmp_path / "state.pt")
    assert sscd.probe_descriptor_dim(tmp_path / "state.pt") == 32
    torch.save({"backbone.conv1.weight": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="no backbone.fc.weight"):
        sscd.probe_descriptor_dim(tmp_path / "other.pt")


def test_a_vit_exported_by_the_trainer_plugs_in_as_a_descriptor(tmp_path):
    """A traced ViT from models/vit.py loads, its dimension is probed at its input size; at another size
    the error says which key to set."""
    from curation.models.vit import build_vit

    torch.manual_seed(0)
    vit = build_vit("vit_small", patch_size=8, img_size=32, depth=1, embed_dim=48, num_heads=3).eval()
    path = tmp_path / "vit.torchscript.pt"
    with torch.inference_mode():
        torch.jit.trace(vit, torch.zeros(1, 3, 32, 32)).save(str(path))
    assert sscd.probe_descriptor_dim(path, image_size=32) == 48
    loaded, source = sscd.load(path, dims=48, image_size=32)
    assert source == f"torchscript:{path}"
    with torch.inference_mode():
        x = torch.randn(2, 3, 32, 32)
        assert torch.allclose(loaded(x), vit(x), atol=1e-4)
    with pytest.raises(CheckpointError, match="dims=512"):
        sscd.load(path, dims=512, image_size=32)
    # Traced at 32 px, the positional embedding is fixed: the error names the key to change.
    with pytest.raises(CheckpointError, match=r"does not run on a 48x48 image \(set dedup\.descriptor\.image_size"):
        sscd.probe_descriptor_dim(path, image_size=48)
