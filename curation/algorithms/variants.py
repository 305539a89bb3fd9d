"""Geometric variants of hash thumbnails: mirror, crops, paddings (query side).

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
filled with black) plus a mirror flag. With ``trim``, the frame of every box
is the image without its uniform borders (:func:`content_box`), so that a
padded image's crops and mirror image are those of its content: crops that
are mostly border would otherwise match other bordered images (measured on
the planted corpus with pHash: wrong drops 9 -> 1). Because a thumbnail is the image
resized to a square, cropping the normalised box of a square source image is
the same as cropping the image and then resizing it.
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
    which undoes a padding of any width and colour.
    """

    mirror: bool = True
    crops: tuple[float, ...] = (0.9, 0.8)
    grid: int = 3
    pads: tuple[float, ...] = ()
    trim: bool = True

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
        return len(self.boxes()[1]) + int(self.trim)


def content_box(source: np.ndarray, tolerance: int = 10) -> tuple[int, int, int, int]:
    """``(x0, y0, x1, y1)`` of ``source`` ``(S, S) uint8`` without its uniform borders.

    Each side is peeled while its outermost row (column) is of one colour:
    every pixel within ``tolerance`` of the row's median. Sides are peeled
    independently (a letterbox pads two sides only). Returns the whole image
    when trimming would leave less than half of a side.
    """
    s = source.shape[0]
    img = source.astype(np.int16)
    flat_rows = np.abs(img - np.median(img, axis=1, keepdims=True)).max(axis=1) <= tolerance
    flat_cols = np.abs(img - np.median(img, axis=0, keepdims=True)).max(axis=0) <= tolerance
    y0, y1 = _peel(flat_rows)
    x0, x1 = _peel(flat_cols)
    if min(x1 - x0, y1 - y0) < s // 2:
        return 0, 0, s, s
    return x0, y0, x1, y1


def _peel(flat: np.ndarray) -> tuple[int, int]:
    """First and past-the-last index not in the runs of True at both ends."""
    inner = np.flatnonzero(~flat)
    return (int(inner[0]), int(inner[-1]) + 1) if len(inner) else (0, len(flat))


def variant_thumbnails(sources: np.ndarray, spec: VariantSpec, size: int) -> np.ndarray:
    """Square grayscale sources ``(B, S, S) uint8`` -> variants ``(B, V, size, size) uint8``.

    Each variant is its box of the source (rounded to source pixels; padding
    black) area-resized to ``size``. ``S`` should be a few times ``size`` so
    that a crop still has more pixels than the thumbnail.
    """
    import cv2

    sources = np.asarray(sources, np.uint8)
    boxes, flips = spec.boxes()
    b, s = len(sources), sources.shape[-1] if sources.ndim == 3 else 0
    out = np.empty((b, spec.count, size, size), np.uint8)
    px = np.rint(boxes * s).astype(np.int64)
    pad = int(max(0, -px.min(initial=0), px.max(initial=0) - s))
    for i in range(b):
        source = _trimmed(sources[i]) if spec.trim else sources[i]
        src = cv2.copyMakeBorder(source, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0) if pad else source
        for v, (x0, y0, x1, y1) in enumerate(px + pad):
            crop = src[y0:y1, x0:x1]
            out[i, v] = cv2.resize(crop[:, ::-1] if flips[v] else crop, (size, size), interpolation=cv2.INTER_AREA)
        if spec.trim:
            out[i, -1] = cv2.resize(source, (size, size), interpolation=cv2.INTER_AREA)
    return out


def _trimmed(source: np.ndarray) -> np.ndarray:
    """The source without its uniform borders, resized back to its side (the variants' frame)."""
    import cv2

    s = source.shape[0]
    x0, y0, x1, y1 = content_box(source)
    if (x0, y0, x1, y1) == (0, 0, s, s):
        return source
    return cv2.resize(source[y0:y1, x0:x1], (s, s), interpolation=cv2.INTER_AREA)
