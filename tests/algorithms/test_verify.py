"""Pixel check of hash matches: masked Pearson correlation of thumbnail pairs."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import skimage.data

from curation.algorithms.verify import masked_correlation


def _thumb(image: np.ndarray, size: int = 32) -> np.ndarray:
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
    return cv2.resize(gray, (size, size), interpolation=cv2.INTER_AREA)


def test_exact_values_and_invariance_to_brightness_and_contrast():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 200, (3, 8, 8)).astype(np.uint8)
    brighter = (a.astype(np.float32) * 0.5 + 40).astype(np.uint8)
    inverted = (255 - a).astype(np.uint8)
    r = masked_correlation(a, np.stack([a[0], brighter[1], inverted[2]]))
    assert r[0] == pytest.approx(1, abs=1e-6)
    assert r[1] == pytest.approx(1, abs=0.01)  # rounding to uint8 only
    assert r[2] == pytest.approx(-1, abs=1e-6)
    x, y = a[0].astype(np.float64).ravel(), a[1].astype(np.float64).ravel()
    assert masked_correlation(a[:1], a[1:2])[0] == pytest.approx(np.corrcoef(x, y)[0, 1], abs=1e-5)


def test_mask_restricts_the_pixels_and_flat_pairs_correlate_zero():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 255, (1, 16, 16)).astype(np.uint8)
    b = a.copy()
    b[0, :4] = 0  # differs only where the mask excludes
    mask = np.ones((1, 16, 16), bool)
    mask[0, :4] = False
    assert masked_correlation(a, b)[0] < 0.99
    assert masked_correlation(a, b, mask)[0] == pytest.approx(1, abs=1e-6)
    flat = np.full((1, 16, 16), 7, np.uint8)
    assert masked_correlation(flat, a)[0] == 0 and masked_correlation(a, a, np.zeros_like(mask))[0] == 0
    with pytest.raises(ValueError, match="one shape"):
        masked_correlation(a, a[:, :8])


def test_copies_pass_and_distinct_photos_do_not():
    """Noisy copies, and copies with a small logo on a textured photo, correlate above 0.8 with their
    original; distinct photos, and different tiles of one photo, stay below it."""
    photos = [_thumb(getattr(skimage.data, n)()) for n in ("astronaut", "camera", "coffee", "chelsea", "rocket")]
    originals = np.stack(photos)
    noisy = np.clip(originals + np.random.default_rng(2).normal(0, 6, originals.shape), 0, 255).astype(np.uint8)
    overlaid = originals.copy()
    overlaid[:, 2:4, 20:24] = 255  # a small white logo (under 1% of the pixels)
    assert (masked_correlation(originals, noisy) > 0.95).all()
    logo = masked_correlation(originals, overlaid)
    # On the dark, flat rocket photo the bright logo outweighs the image: such copies are missed.
    assert (logo[:4] > 0.8).all() and logo[4] < 0.8
    others = np.roll(originals, 1, axis=0)
    assert (masked_correlation(originals, others) < 0.8).all()
    big = _thumb(skimage.data.astronaut(), 64)
    tiles = np.stack([big[:32, :32], big[:32, 32:], big[32:, :32], big[32:, 32:]])
    assert (masked_correlation(tiles, np.roll(tiles, 1, axis=0)) < 0.8).all()
