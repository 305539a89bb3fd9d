"""Geometric variants of hash thumbnails: mirror, crops, paddings, rotations (query side).

A hash code changes completely when an image is mirrored, cropped by a fifth
or padded, because every pixel of its thumbnail moves. Instead of a code
invariant to those transforms, each image also *queries* the Hamming index
with the codes of a few transformed versions of itself: a copy cropped from
the original matches the original's crop variant, a padded copy's crop
variant (padding cut off) matches the original, a mirrored copy matches the
mirror variant. The index still holds one code per image; only queries
multiply, so the search stays exact (see :mod:`curation.algorithms.hamming`).

Variants are boxes in normalised coordinates of the image (``(x0, y0, x1,
y1)``, ``[0, 1]`` is the whole image; a box reaching outside is a padding,
filled with black) plus a mirror flag. Their frame is the image without its
uniform borders (:func:`trimmed`, applied by the features step at the decoded
resolution): a padded copy's frame is then its original's whole image (the
``trim`` variant), and its crops and mirror image are those of its content,
not mostly border (on the planted corpus this took the wrong drops of pHash
with variants from 9 to 1 and found 0.89 of the paddings instead of 0.42).

Rotations turn the frame about its centre by a few degrees, corners filled
with black, as a copy rotated in place is: the original's rotated variant
then matches the copy's own code. Their black corners are not part of the
image, so :func:`variant_masks` marks the thumbnail pixels each variant
really covers, for a pixel-level check of its matches
(:mod:`curation.algorithms.verify`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class VariantSpec:
    """Which variants each image queries with.

    ``mirror``: the horizontally flipped image. ``crops``: kept side
    fractions (0.8 keeps 80% of the width and height); each at a ``grid`` x
    ``grid`` set of positions (1: centred; 3: corners, edge midpoints and
    centre). ``pads``: padding per side as a fraction of the side, centred.
    ``trim``: the image without its uniform borders (:func:`content_box`),
    which undoes a padding of any width and colour. ``rotations``: angles in
    degrees, counter-clockwise, about the centre, corners black.

    Order of the variants: mirror, crops, pads, rotations, then trim (last).
    """

    mirror: bool = True
    crops: tuple[float, ...] = (0.9, 0.8)
    grid: int = 3
    pads: tuple[float, ...] = ()
    trim: bool = True
    rotations: tuple[float, ...] = ()

    def boxes(self) -> tuple[np.ndarray, np.ndarray]:
        """``(boxes (V, 4) float64, mirrored (V,) bool)``, in a fixed order."""
        boxes, flips = [], []
        if self.mirror:
            boxes.append((0.0, 0.0, 1.0, 1.0))
            flips.append(True)
        offsets = [0.5] if self.grid == 1 else np.linspace(0, 1, self.grid)
        for keep in self.crops:
            for oy in offsets:
                for ox in offsets:
                    x0, y0 = (1 - keep) * ox, (1 - keep) * oy
                    boxes.append((x0, y0, x0 + keep, y0 + keep))
                    flips.append(False)
        for pad in self.pads:
            boxes.append((-pad, -pad, 1 + pad, 1 + pad))
            flips.append(False)
        return np.array(boxes, np.float64).reshape(-1, 4), np.array(flips, bool)

    @property
    def count(self) -> int:
        return len(self.boxes()[1]) + len(self.rotations) + int(self.trim)


def content_box(image: np.ndarray, tolerance: int = 10) -> tuple[int, int, int, int]:
    """``(x0, y0, x1, y1)`` of a grayscale ``image`` ``(H, W) uint8`` without its uniform borders.

    Each side is peeled while its outermost row (column) is of one colour:
    every pixel within ``tolerance`` of the row's median. Sides are peeled
    independently (a letterbox pads two sides only). Returns the whole image
    when trimming would leave less than half of a side.
    """
    h, w = image.shape
    img = image.astype(np.int16)
    flat_rows = np.abs(img - np.median(img, axis=1, keepdims=True)).max(axis=1) <= tolerance
    flat_cols = np.abs(img - np.median(img, axis=0, keepdims=True)).max(axis=0) <= tolerance
    y0, y1 = _peel(flat_rows)
    x0, x1 = _peel(flat_cols)
    if x1 - x0 < w // 2 or y1 - y0 < h // 2:
        return 0, 0, w, h
    return x0, y0, x1, y1


def trimmed(image: np.ndarray) -> np.ndarray:
    """``image`` ``(H, W)`` or ``(H, W, C)`` without its uniform borders (found on its luma)."""
    import cv2

    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
    x0, y0, x1, y1 = content_box(gray)
    return image[y0:y1, x0:x1]


def _peel(flat: np.ndarray) -> tuple[int, int]:
    """First and past-the-last index not in the runs of True at both ends."""
    inner = np.flatnonzero(~flat)
    return (int(inner[0]), int(inner[-1]) + 1) if len(inner) else (0, len(flat))


def variant_thumbnails(sources: np.ndarray, spec: VariantSpec, size: int) -> np.ndarray:
    """Square grayscale frames ``(B, S, S) uint8`` -> variants ``(B, V, size, size) uint8``.

    Each variant is its box of the frame (rounded to frame pixels; padding
    black) area-resized to ``size``, then each rotation of the frame
    (bilinear, corners black) area-resized; with ``spec.trim`` the last
    variant is the whole frame. ``S`` should be a few times ``size`` so that
    a crop still has more pixels than the thumbnail.
    """
    import cv2

    sources = np.asarray(sources, np.uint8)
    boxes, flips = spec.boxes()
    b, s = len(sources), sources.shape[-1] if sources.ndim == 3 else 0
    out = np.empty((b, spec.count, size, size), np.uint8)
    px = np.rint(boxes * s).astype(np.int64)
    pad = int(max(0, -px.min(initial=0), px.max(initial=0) - s))
    for i in range(b):
        src = cv2.copyMakeBorder(sources[i], pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0) if pad else sources[i]
        for v, (x0, y0, x1, y1) in enumerate(px + pad):
            crop = src[y0:y1, x0:x1]
            out[i, v] = cv2.resize(crop[:, ::-1] if flips[v] else crop, (size, size), interpolation=cv2.INTER_AREA)
        for r, angle in enumerate(spec.rotations):
            out[i, len(px) + r] = _rotated(sources[i], angle, size)
        if spec.trim:
            out[i, -1] = cv2.resize(sources[i], (size, size), interpolation=cv2.INTER_AREA)
    return out


def _rotated(source: np.ndarray, angle: float, size: int) -> np.ndarray:
    """``source`` ``(S, S) uint8`` turned by ``angle`` degrees about its centre (corners 0), resized to ``size``."""
    import cv2

    s = source.shape[0]
    turn = cv2.getRotationMatrix2D(((s - 1) / 2, (s - 1) / 2), angle, 1.0)
    warped = cv2.warpAffine(source, turn, (s, s), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return cv2.resize(warped, (size, size), interpolation=cv2.INTER_AREA)


def variant_masks(spec: VariantSpec, source_size: int, size: int) -> np.ndarray:
    """``(V, size, size) bool``: the thumbnail pixels of each variant made of image pixels only.

    All True but for the rotations (their black corners, and any pixel the
    area resize mixes with them, are False) and for paddings (the border).
    Same order as :func:`variant_thumbnails`; computed on a white frame.
    """
    white = np.full((1, source_size, source_size), 255, np.uint8)
    return variant_thumbnails(white, spec, size)[0] == 255
