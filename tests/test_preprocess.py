"""Preprocessing equals torchvision's evaluation transform; failures are reasons."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from curation.models.inference import decode_batch
from curation.preprocess import (
    DecodeError,
    PreprocessSpec,
    decode,
    normalise,
    resized_size,
)


def encode(array: np.ndarray, fmt: str = "PNG", mode: str | None = None) -> bytes:
    img = Image.fromarray(array)
    if mode:
        img = img.convert(mode)
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    from skimage import data

    # Landscape, portrait (transposed) and a grey image: every resize branch.
    grey = data.camera()
    return [data.astronaut(), np.ascontiguousarray(data.chelsea().transpose(1, 0, 2)), np.stack([grey] * 3, -1)]


def reference(blob: bytes, spec: PreprocessSpec):
    from torchvision import transforms

    t = transforms.Compose(
        [
            transforms.Resize(spec.short_side, interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.CenterCrop(spec.image_size),
            transforms.ToTensor(),
            transforms.Normalize(spec.mean, spec.std),
        ]
    )
    return t(Image.open(io.BytesIO(blob)).convert("RGB"))


@pytest.mark.parametrize("image_size", [224, 98])
def test_matches_torchvision_eval_transform(photos, image_size):
    import torch

    spec = PreprocessSpec(image_size=image_size)
    blobs = [encode(p) for p in photos] + [encode(photos[0], "JPEG")]
    batch = decode_batch(blobs, spec)
    assert batch.ok.all() and batch.pixels.shape == (4, image_size, image_size, 3)
    ours = normalise(batch.pixels, spec.mean, spec.std)
    ref = torch.stack([reference(b, spec) for b in blobs])
    assert ours.shape == ref.shape == (4, 3, image_size, image_size)
    # Same resampling and crop: only float rounding differs.
    assert torch.allclose(ours, ref, atol=1e-5)


def test_resized_size_truncates_long_side_like_torchvision():
    assert resized_size(512, 512, 256) == (256, 256)
    assert resized_size(451, 300, 256) == (int(256 * 451 / 300), 256)
    assert resized_size(300, 451, 256) == (256, int(256 * 451 / 300))
    assert PreprocessSpec(image_size=224).short_side == 256
    assert PreprocessSpec(image_size=518).short_side == 592


def test_modes_are_converted_to_rgb(photos):
    spec = PreprocessSpec(image_size=64)
    for mode in ("L", "P", "RGBA", "CMYK"):
        fmt = "JPEG" if mode == "CMYK" else "PNG"
        out = decode(encode(photos[0], fmt, mode), spec)
        assert out.shape == (64, 64, 3) and out.dtype == np.uint8


def test_draft_decoding_is_close_to_full_decoding(photos):
    big = np.kron(photos[0], np.ones((2, 2, 1), dtype=np.uint8))  # 1024 x 1024
    blob = encode(big, "JPEG")
    full = decode(blob, PreprocessSpec(image_size=112)).astype(np.float32)
    draft = decode(blob, PreprocessSpec(image_size=112, draft=True)).astype(np.float32)
    assert full.shape == draft.shape
    assert np.abs(full - draft).mean() < 4.0


def test_failures_become_reasons(photos):
    good = encode(photos[0], "JPEG")
    blobs = [good, b"not an image at all", None, good[: len(good) // 3], b""]
    spec = PreprocessSpec(image_size=32)
    with ThreadPoolExecutor(2) as pool:
        batch = decode_batch(blobs, spec, pool)
    assert batch.ok.tolist() == [True, False, False, False, False]
    assert batch.reasons == [None, "unidentified_image", "missing_image", "broken_image", "missing_image"]
    assert batch.errors[0] is None and all(batch.errors[1:])
    assert not batch.pixels[1:].any()  # failed rows stay zero
    with pytest.raises(DecodeError) as err:
        decode(b"\x89PNG\r\n\x1a\n garbage", spec)
    assert err.value.reason in ("unidentified_image", "broken_image")


def test_thread_pool_gives_the_same_pixels(photos):
    blobs = [encode(p, "JPEG") for p in photos] * 3
    spec = PreprocessSpec(image_size=48)
    with ThreadPoolExecutor(3) as pool:
        threaded = decode_batch(blobs, spec, pool)
    serial = decode_batch(blobs, spec)
    np.testing.assert_array_equal(threaded.pixels, serial.pixels)
