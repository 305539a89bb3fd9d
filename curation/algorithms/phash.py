"""DCT perceptual hash (pHash), batched.

The standard pHash: a 32x32 grayscale thumbnail, its 2-D DCT-II, the 8x8
lowest frequencies, one bit per coefficient: above the median of the 64.
Given thumbnails made like ``imagehash.phash`` makes them (grayscale, then
Lanczos resize of the full image: :func:`~curation.algorithms.pca_hash.gray_resize`),
the bits equal ``imagehash.phash(image).hash`` exactly, because the same
DCT (scipy's, unnormalised type II, rows then columns) and the same median
are applied, only to a whole batch at once.
"""

from __future__ import annotations

import numpy as np

HASH_SIZE = 8
HIGHFREQ_FACTOR = 4
THUMB_SIZE = HASH_SIZE * HIGHFREQ_FACTOR


def phash_bits(thumbs: np.ndarray, hash_size: int = HASH_SIZE) -> np.ndarray:
    """Thumbnails ``(B, S, S) uint8`` -> bits ``(B, hash_size, hash_size) bool``."""
    import scipy.fftpack

    pixels = np.asarray(thumbs)
    if pixels.ndim != 3 or pixels.shape[1] != pixels.shape[2] or pixels.shape[1] < hash_size:
        raise ValueError(f"phash needs (B, S, S) thumbnails with S >= {hash_size}, got {pixels.shape}")
    # Same order as imagehash: axis 0 of each image (our axis 1), then axis 1.
    dct = scipy.fftpack.dct(scipy.fftpack.dct(pixels, axis=1), axis=2)
    low = dct[:, :hash_size, :hash_size]
    med = np.median(low.reshape(len(low), -1), axis=1)
    return low > med[:, None, None]


def phash_codes(thumbs: np.ndarray, hash_size: int = HASH_SIZE) -> np.ndarray:
    """Thumbnails ``(B, S, S) uint8`` -> packed codes ``(B, hash_size**2 // 8) uint8``.

    Bits are in imagehash's row-major order, most significant bit first, so
    ``codes[i].tobytes().hex() == str(imagehash.phash(image_i))``.
    """
    bits = phash_bits(thumbs, hash_size)
    return np.packbits(bits.reshape(len(bits), -1), axis=1)
