"""Batched DCT pHash: bit-for-bit parity with imagehash.phash."""

from __future__ import annotations

import io

import imagehash
import numpy as np
import pytest
import skimage.data
from PIL import Image, ImageDraw
from sklearn.datasets import load_sample_images

from curation.algorithms import phash
from curation.algorithms.pca_hash import decode_thumbnail, gray_resize

PHOTOS = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "camera",
    "coins",
    "moon",
    "page",
    "text",
    "clock",
    "brick",
    "grass",
    "gravel",
    "cell",
    "hubble_deep_field",
    "immunohistochemistry",
    "colorwheel",
)


def _images() -> list[Image.Image]:
    """Real photos in several modes and sizes, plus generated images (~150)."""
    out = [Image.fromarray(getattr(skimage.data, name)()) for name in PHOTOS]
    out += [Image.fromarray(a) for a in load_sample_images().images]
    rng = np.random.default_rng(0)
    derived = []
    for img in out:
        w, h = img.size
        derived.append(img.resize((max(8, w // 3), max(8, h // 5))))
        derived.append(img.crop((w // 4, h // 4, w, h)).convert("RGBA"))
        derived.append(img.convert("P"))
    for i in range(80):
        size = tuple(int(s) for s in rng.integers(16, 300, 2))
        if i % 4 == 0:
            derived.append(Image.fromarray(rng.integers(0, 256, (*size[::-1], 3), dtype=np.uint8)))
        elif i % 4 == 1:
            ramp = np.linspace(0, 255, size[0] * size[1]).reshape(size[1], size[0])
            derived.append(Image.fromarray((ramp * rng.uniform(0.2, 1)).astype(np.uint8)))
        else:
            img = Image.new("RGB", size, tuple(int(c) for c in rng.integers(0, 256, 3)))
            draw = ImageDraw.Draw(img)
            for _ in range(5):
                x0, y0 = int(rng.integers(0, size[0])), int(rng.integers(0, size[1]))
                draw.ellipse((x0, y0, x0 + 40, y0 + 30), fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
            derived.append(img)
    return out + derived


def test_bits_equal_imagehash_on_many_images():
    images = _images()
    assert len(images) >= 150
    thumbs = np.stack([gray_resize(img, phash.THUMB_SIZE) for img in images])
    codes = phash.phash_codes(thumbs)
    bits = phash.phash_bits(thumbs)
    for img, code, bit in zip(images, codes, bits, strict=False):
        reference = imagehash.phash(img)
        assert (bit == reference.hash).all()
        assert code.tobytes().hex() == str(reference)


def test_parity_from_jpeg_bytes_without_draft():
    img = Image.fromarray(skimage.data.astronaut())
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    thumb, size = decode_thumbnail(buf.getvalue(), phash.THUMB_SIZE, draft=False)
    assert size == (512, 512)
    reference = imagehash.phash(Image.open(io.BytesIO(buf.getvalue())))
    assert phash.phash_codes(thumb[None])[0].tobytes().hex() == str(reference)


def test_rejects_non_square_batches():
    with pytest.raises(ValueError, match="thumbnails"):
        phash.phash_bits(np.zeros((2, 32, 16), np.uint8))
