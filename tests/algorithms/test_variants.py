"""Geometric variants of hash thumbnails: boxes, pixels, and the copies they catch."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import skimage.data

from curation.algorithms import phash
from curation.algorithms.hamming import hamming
from curation.algorithms.variants import VariantSpec, content_box, trimmed, variant_masks, variant_thumbnails


def _gray(image: np.ndarray, size: int) -> np.ndarray:
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
    return cv2.resize(gray, (size, size), interpolation=cv2.INTER_AREA)


def test_boxes_in_order_mirror_then_crops_then_pads():
    boxes, flips = VariantSpec(True, (0.8,), 3, (0.1,), trim=False).boxes()
    assert flips.tolist() == [True] + [False] * 10
    assert np.allclose(boxes[0], [0, 0, 1, 1]) and np.allclose(boxes[-1], [-0.1, -0.1, 1.1, 1.1])
    assert np.allclose(boxes[1], [0, 0, 0.8, 0.8]) and np.allclose(boxes[5], [0.1, 0.1, 0.9, 0.9])
    assert np.allclose(boxes[9], [0.2, 0.2, 1, 1])
    assert VariantSpec(True, (0.8, 0.9), 7).count == 1 + 2 * 49 + 1
    assert VariantSpec(False, (0.9,), 1, trim=False).count == 1


def test_variant_pixels_are_the_crops_of_the_source():
    source = np.arange(64 * 64, dtype=np.int64).reshape(64, 64) % 251
    source = source.astype(np.uint8)
    spec = VariantSpec(True, (0.5,), 1, (0.25,), trim=False)
    out = variant_thumbnails(source[None], spec, 16)
    assert out.shape == (1, 3, 16, 16)
    assert np.array_equal(out[0, 0], cv2.resize(source[:, ::-1], (16, 16), interpolation=cv2.INTER_AREA))
    assert np.array_equal(out[0, 1], cv2.resize(source[16:48, 16:48], (16, 16), interpolation=cv2.INTER_AREA))
    padded = np.zeros((96, 96), np.uint8)
    padded[16:80, 16:80] = source
    assert np.array_equal(out[0, 2], cv2.resize(padded, (16, 16), interpolation=cv2.INTER_AREA))


@pytest.mark.parametrize("sides,colour", [((5, 0, 9, 0), 0), ((0, 7, 0, 7), 255), ((3, 4, 5, 6), 0)])
def test_content_box_undoes_a_padding_of_any_sides(sides, colour):
    photo = _gray(skimage.data.astronaut(), 50)
    left, top, right, bottom = sides
    padded = np.full((50 + top + bottom, 50 + left + right), colour, np.uint8)
    padded[top : top + 50, left : left + 50] = photo
    assert content_box(padded) == (left, top, left + 50, top + 50)
    assert content_box(photo) == (0, 0, 50, 50)
    assert content_box(np.zeros((40, 40), np.uint8)) == (0, 0, 40, 40)  # flat: nothing to trim
    rgb = np.repeat(padded[..., None], 3, axis=2)
    assert np.array_equal(trimmed(rgb), rgb[top : top + 50, left : left + 50])
    wide = np.zeros((30, 90), np.uint8)
    wide[:, 20:70] = _gray(skimage.data.coffee(), 50)[:30]
    assert content_box(wide) == (20, 0, 70, 30)  # not square


def test_variants_catch_mirrored_cropped_and_padded_copies_of_photos():
    """pHash misses each of these copies; one of the original's (or the copy's) variants is within 4 bits
    for all but at most one of the twelve."""
    spec, caught = VariantSpec(), []
    for name in ("astronaut", "chelsea", "coffee", "rocket"):
        photo = getattr(skimage.data, name)()
        h, w = photo.shape[:2]
        copies = {
            "mirror": photo[:, ::-1],
            "crop_20": photo[int(0.1 * h) : int(0.9 * h), int(0.2 * w) :],
            "pad": cv2.copyMakeBorder(photo, h // 10, h // 10, 0, 0, cv2.BORDER_CONSTANT, value=(0, 0, 0)),
        }
        original = _gray(trimmed(photo), 64)  # variant frames: without uniform borders, as the stage stores them
        base = phash.phash_codes(_gray(photo, 32)[None])
        for kind, copy in copies.items():
            code = phash.phash_codes(_gray(copy, 32)[None])
            assert hamming(base, code)[0] > 4, (name, kind)
            variants_of = [
                variant_thumbnails(original[None], spec, 32)[0],
                variant_thumbnails(_gray(trimmed(np.ascontiguousarray(copy)), 64)[None], spec, 32)[0],
            ]
            best = min(
                hamming(phash.phash_codes(v), np.repeat(c, len(v), axis=0)).min()
                for v, c in zip(variants_of, (code, base), strict=True)
            )
            caught.append(best <= 4)
    assert sum(caught) >= len(caught) - 1, caught


def test_rotations_follow_the_boxes_and_precede_trim():
    spec = VariantSpec(True, (0.8,), 1, trim=True, rotations=(-5.0, 5.0))
    assert spec.count == 1 + 1 + 2 + 1
    source = _gray(skimage.data.camera(), 64)
    out = variant_thumbnails(source[None], spec, 32)[0]
    turn = cv2.getRotationMatrix2D((31.5, 31.5), 5.0, 1.0)
    rotated = cv2.warpAffine(source, turn, (64, 64), flags=cv2.INTER_LINEAR, borderValue=0)
    assert np.array_equal(out[3], cv2.resize(rotated, (32, 32), interpolation=cv2.INTER_AREA))
    assert np.array_equal(out[-1], cv2.resize(source, (32, 32), interpolation=cv2.INTER_AREA))


def test_masks_cover_image_pixels_only():
    spec = VariantSpec(True, (0.8,), 1, (0.25,), trim=True, rotations=(10.0,))
    masks = variant_masks(spec, 64, 32)
    assert masks.shape == (spec.count, 32, 32)
    assert masks[0].all() and masks[1].all() and masks[-1].all()  # mirror, crop, trim
    assert not masks[2][0].any() and masks[2][16, 16]  # the padding's border row is not image
    rotation = masks[3]
    assert not rotation[0, 0] and not rotation[-1, -1] and rotation[8:24, 8:24].all()
    assert 0.7 < rotation.mean() < 0.95


def test_a_rotated_copy_matches_the_rotated_variant_of_its_original():
    """A photo turned by 7 degrees in place is far from the original's code but within 4 bits of the code of
    the original's nearest rotated variant (6 or 8 degrees), for most of the photos."""
    spec, caught = VariantSpec(False, (), 1, trim=False, rotations=(-8, -6, 6, 8)), []
    for name in ("astronaut", "chelsea", "coffee", "rocket", "camera"):
        photo = _gray(skimage.data.__dict__[name](), 256)
        turn = cv2.getRotationMatrix2D((127.5, 127.5), 7.0, 1.0)
        copy = phash.phash_codes(_gray(cv2.warpAffine(photo, turn, (256, 256), borderValue=0), 32)[None])
        assert hamming(phash.phash_codes(_gray(photo, 32)[None]), copy)[0] > 4, name
        variants = phash.phash_codes(variant_thumbnails(_gray(photo, 64)[None], spec, 32)[0])
        caught.append(hamming(variants, np.repeat(copy, len(variants), axis=0)).min() <= 4)
    assert sum(caught) >= len(caught) - 1, caught
