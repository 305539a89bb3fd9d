"""PCA hash: fitting, storage, and which planted duplicates it finds.

At the default settings (32x32 thumbnails, 64 bits, Hamming <= 4) the hash
finds re-encodes, downscales, small brightness and saturation shifts. It does
NOT find flips, 90-degree rotations or crops (30% crops look like unrelated
images; a 5% border crop is found for at most a fifth of the images): those
are left to the copy-detection descriptor. Upscales and small text overlays
are found for at least 80% of the images, not for every one.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import skimage.data
from PIL import Image, ImageDraw, ImageEnhance, ImageOps
from sklearn.datasets import load_sample_images

from curation.algorithms import pca_hash
from curation.errors import CheckpointError

SIZE, BITS, MAX_DISTANCE = 32, 64, 4
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
    "cell",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
)  # colorwheel is its own vertical flip


def _jpeg(img: Image.Image, quality: int = 92) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _generated(n: int, seed: int = 0) -> list[Image.Image]:
    """Flat-colour scenes of random ellipses and boxes."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        img = Image.new("RGB", (320, 240), tuple(int(c) for c in rng.integers(0, 256, 3)))
        draw = ImageDraw.Draw(img)
        for _ in range(6):
            x, y = int(rng.integers(0, 300)), int(rng.integers(0, 220))
            box = (x, y, x + int(rng.integers(30, 160)), y + int(rng.integers(30, 120)))
            shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
            shape(box, fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
        out.append(img)
    return out


@pytest.fixture(scope="module")
def images() -> list[Image.Image]:
    photos = [Image.fromarray(getattr(skimage.data, name)()).convert("RGB") for name in PHOTOS]
    return photos + [Image.fromarray(a) for a in load_sample_images().images] + _generated(10)


@pytest.fixture(scope="module")
def basis(images) -> pca_hash.PCABasis:
    """Fitted on 1500 random crops of the images (the pool sample)."""
    rng = np.random.default_rng(0)
    thumbs = []
    for _ in range(1500):
        img = images[rng.integers(len(images))]
        w, h = int(img.width * rng.uniform(0.3, 0.7)), int(img.height * rng.uniform(0.3, 0.7))
        x, y = int(rng.integers(0, img.width - w)), int(rng.integers(0, img.height - h))
        thumbs.append(pca_hash.gray_resize(img.crop((x, y, x + w, y + h)), SIZE))
    return pca_hash.fit(pca_hash.features(np.stack(thumbs)), BITS, SIZE)


def _codes(blobs: list[bytes], basis) -> np.ndarray:
    thumbs = np.stack([pca_hash.decode_thumbnail(b, SIZE)[0] for b in blobs])
    return pca_hash.hash_codes(pca_hash.features(thumbs), basis)


def _distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.unpackbits(a ^ b, axis=1).sum(axis=1)


def _overlay(img: Image.Image) -> Image.Image:
    img = img.copy()
    ImageDraw.Draw(img).text((8, 8), "(c) copyright 2024", fill=(255, 255, 255))
    return img


def _crop(img: Image.Image, frac: float) -> Image.Image:
    dx, dy = int(img.width * frac), int(img.height * frac)
    return img.crop((dx, dy, img.width - dx, img.height - dy))


FOUND = {
    "reencode_q50": lambda im: _jpeg(Image.open(io.BytesIO(_jpeg(im))), 50),
    "downscale_half": lambda im: _jpeg(im.resize((im.width // 2, im.height // 2), Image.Resampling.BILINEAR)),
    "saturation_0.8": lambda im: _jpeg(ImageEnhance.Color(im).enhance(0.8)),
    "brightness_1.05": lambda im: _jpeg(ImageEnhance.Brightness(im).enhance(1.05)),
}
NOT_FOUND = {
    "hflip": lambda im: _jpeg(ImageOps.mirror(im)),
    "vflip": lambda im: _jpeg(ImageOps.flip(im)),
    "rot90": lambda im: _jpeg(im.rotate(90, expand=True)),
    "crop_30pct_border": lambda im: _jpeg(_crop(im, 0.3)),
}
# name -> (transform, fraction of the images found)
PARTLY_FOUND = {
    "upscale_1.5": (
        lambda im: _jpeg(im.resize((im.width * 3 // 2, im.height * 3 // 2), Image.Resampling.BICUBIC)),
        (0.8, 1.0),
    ),
    "text_overlay": (lambda im: _jpeg(_overlay(im)), (0.8, 1.0)),
    "crop_5pct_border": (lambda im: _jpeg(_crop(im, 0.05)), (0.0, 0.2)),
}


def test_distinct_images_are_far_apart(images, basis):
    codes = _codes([_jpeg(im) for im in images], basis)
    i, j = np.triu_indices(len(codes), 1)
    assert _distance(codes[i], codes[j]).min() > MAX_DISTANCE


@pytest.mark.parametrize("name", sorted(FOUND))
def test_finds_what_a_perceptual_hash_should(images, basis, name):
    original = _codes([_jpeg(im) for im in images], basis)
    copies = _codes([FOUND[name](im) for im in images], basis)
    assert (_distance(original, copies) <= MAX_DISTANCE).all()


@pytest.mark.parametrize("name", sorted(NOT_FOUND))
def test_does_not_find_geometric_changes(images, basis, name):
    original = _codes([_jpeg(im) for im in images], basis)
    copies = _codes([NOT_FOUND[name](im) for im in images], basis)
    assert (_distance(original, copies) > MAX_DISTANCE).all()


@pytest.mark.parametrize("name", sorted(PARTLY_FOUND))
def test_upscales_and_overlays_are_mostly_found_small_crops_mostly_not(images, basis, name):
    transform, (low, high) = PARTLY_FOUND[name]
    original = _codes([_jpeg(im) for im in images], basis)
    copies = _codes([transform(im) for im in images], basis)
    assert low <= (_distance(original, copies) <= MAX_DISTANCE).mean() <= high


def test_basis_round_trip_through_npy(tmp_path, basis, images):
    basis.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [pca_hash.COMPONENTS_FILE, pca_hash.MEAN_FILE]
    loaded = pca_hash.PCABasis.load(tmp_path)
    assert loaded.components.shape == (BITS, SIZE * SIZE) and loaded.mean.shape == (SIZE * SIZE,)
    blobs = [_jpeg(im) for im in images[:5]]
    assert (_codes(blobs, loaded) == _codes(blobs, basis)).all()
    np.save(tmp_path / pca_hash.MEAN_FILE, np.zeros(7, np.float32))
    with pytest.raises(CheckpointError, match="do not match"):
        pca_hash.PCABasis.load(tmp_path)


def test_fit_is_deterministic_and_orthonormal(basis):
    comps = basis.components.astype(np.float64)
    assert np.allclose(comps @ comps.T, np.eye(BITS), atol=1e-4)
    assert basis.learned == BITS


def test_small_sample_is_completed_with_dct_directions():
    rng = np.random.default_rng(0)
    thumbs = rng.integers(0, 256, (10, 16, 16), dtype=np.uint8)
    small = pca_hash.fit(pca_hash.features(thumbs), 64, 16)
    assert small.learned == 9  # 10 samples span 9 directions around their mean
    assert np.allclose(small.components[9:], pca_hash.dct_basis(16, 55))
    # A re-encoded sample image keeps its code although most bits are not learned.
    codes = pca_hash.hash_codes(pca_hash.features(thumbs), small)
    noisy = np.clip(thumbs.astype(int) + rng.integers(-2, 3, thumbs.shape), 0, 255).astype(np.uint8)
    assert _distance(codes, pca_hash.hash_codes(pca_hash.features(noisy), small)).max() <= MAX_DISTANCE


def test_features_ignore_brightness_and_contrast_and_zero_flat_images():
    rng = np.random.default_rng(1)
    base = rng.integers(60, 140, (2, 8, 8)).astype(np.uint8)
    shifted = (base.astype(np.int32) * 2 - 40).astype(np.uint8)  # no clipping in this range
    assert np.allclose(pca_hash.features(base), pca_hash.features(shifted), atol=1e-5)
    assert (pca_hash.features(np.full((1, 8, 8), 77, np.uint8)) == 0).all()


def test_draft_decode_gives_a_thumbnail_of_the_original_size(images):
    blob = _jpeg(images[0])
    draft, size = pca_hash.decode_thumbnail(blob, SIZE, draft=True)
    full, _ = pca_hash.decode_thumbnail(blob, SIZE, draft=False)
    assert size == images[0].size and draft.shape == full.shape == (SIZE, SIZE)
    # The same picture (area average of a reduced decode vs Lanczos of the full one).
    assert np.corrcoef(draft.ravel(), full.ravel())[0, 1] > 0.98
    with pytest.raises(OSError):
        pca_hash.decode_thumbnail(b"not an image", SIZE)


def test_thumbnails_are_area_averages_of_the_luma():
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, (2, 64, 96, 3), dtype=np.uint8)
    thumbs = pca_hash.thumbnails(list(rgb), 32)
    luma = np.asarray([Image.fromarray(im).convert("L") for im in rgb], dtype=np.float64)
    blocks = luma.reshape(2, 32, 2, 32, 3).mean(axis=(2, 4))  # 64 x 96 -> 32 x 32: 2 x 3 blocks
    assert thumbs.shape == (2, 32, 32) and np.abs(thumbs - blocks).max() <= 1
    gray = rng.integers(0, 256, (40, 40), dtype=np.uint8)
    assert pca_hash.thumbnails([gray], 40)[0].tolist() == gray.tolist()
