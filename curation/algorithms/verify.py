"""Pixel-level check of hash matches: normalised cross-correlation of aligned thumbnails.

A Hamming radius alone trades recall for precision: the more variants each
image queries with (mirror, crops, rotations), the more chances a distinct
image has to fall within the radius of one of them. A match found by the
hash is a *candidate*; it is kept when the two thumbnails that matched (the
query's, e.g. a rotated variant, and the indexed image's) also agree pixel
by pixel: their Pearson correlation over the pixels both really cover is at
least a threshold. The correlation ignores brightness and contrast (colour
changes still match), is 1 for identical thumbnails, and, unlike 64 sign
bits, sees every one of the ``s * s`` pixels, so a distinct image that the
code confuses with a copy rarely passes it. It is not a copy detector on
its own: near-mirror-symmetric photographs and flat images correlate highly.

Memory: the pairs' two thumbnails, ``2 * s * s`` bytes per pair, chunk by chunk.
"""

from __future__ import annotations

import numpy as np


def masked_correlation(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Pearson correlation per pair of thumbnails ``a``, ``b`` ``(k, s, s)`` -> ``(k,) float32`` in [-1, 1].

    ``mask`` ``(k, s, s) bool`` (None: every pixel): the pixels compared; a
    pair with fewer than two, or flat over them (zero variance on either
    side), correlates 0.
    """
    a = np.asarray(a, np.float32).reshape(len(a), -1)
    b = np.asarray(b, np.float32).reshape(len(b), -1)
    if a.shape != b.shape:
        raise ValueError(f"thumbnails of a pair must have one shape, got {a.shape} and {b.shape}")
    m = np.ones_like(a, dtype=bool) if mask is None else np.asarray(mask, bool).reshape(a.shape)
    count = m.sum(axis=1, dtype=np.float32)
    safe = np.maximum(count, 1)
    a = np.where(m, a - (a * m).sum(axis=1, keepdims=True) / safe[:, None], 0)
    b = np.where(m, b - (b * m).sum(axis=1, keepdims=True) / safe[:, None], 0)
    norm = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    ok = (count >= 2) & (norm > 1e-6 * safe)
    return np.where(ok, (a * b).sum(axis=1) / np.where(ok, norm, 1), 0).astype(np.float32)
