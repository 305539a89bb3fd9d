"""PCA hash: binary codes learned by PCA on small grayscale thumbnails.

Pipeline, all batched (a batch of thumbnails is one array):

1. :func:`thumbnails` turns a batch of decoded images into small grayscale
   thumbnails by area averaging; :func:`decode_thumbnail` goes from bytes,
   decoding JPEGs at a reduced DCT scale (1/2..1/8, libjpeg "draft" mode),
   which skips most of the decoding work because the target is tiny.
2. :func:`features` turns thumbnails ``(B, s, s) uint8`` into per-image
   standardised vectors ``(B, s*s) float32`` (zero mean, unit variance), so
   that brightness and contrast shifts do not change the code.
3. :func:`fit` learns the mean and the top principal components on a sample;
   :func:`hash_codes` keeps the signs of the projections, packed 8 bits per
   byte (``(B, n_bits // 8) uint8``, most significant bit first).

The basis is stored with the run as two ``.npy`` files (no pickle).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from curation.errors import CheckpointError

MEAN_FILE = "pca_mean.npy"
COMPONENTS_FILE = "pca_components.npy"
# Relative eigenvalue under which a principal direction carries no variance
# of the sample (a sample smaller than the code): such bits would be noise.
_RANK_TOL = 1e-6


@dataclass(frozen=True)
class PCABasis:
    """``mean`` (D,) float32 and ``components`` (n_bits, D) float32."""

    mean: np.ndarray
    components: np.ndarray
    learned: int  # rows of ``components`` learned by PCA; the rest are DCT

    @property
    def n_bits(self) -> int:
        return self.components.shape[0]

    def save(self, directory: Path) -> None:
        from curation.atomic import atomic_path

        for name, array in ((MEAN_FILE, self.mean), (COMPONENTS_FILE, self.components)):
            with atomic_path(Path(directory) / name) as tmp:
                with open(tmp, "wb") as fh:
                    np.save(fh, array, allow_pickle=False)

    @classmethod
    def load(cls, directory: Path) -> PCABasis:
        try:
            mean = np.load(Path(directory) / MEAN_FILE, allow_pickle=False)
            comps = np.load(Path(directory) / COMPONENTS_FILE, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise CheckpointError(f"{directory}: cannot read the PCA hash basis: {err}") from None
        if mean.ndim != 1 or comps.ndim != 2 or comps.shape[1] != mean.shape[0]:
            raise CheckpointError(
                f"{directory}: PCA basis shapes mean {mean.shape} and components {comps.shape} do not match"
            )
        return cls(mean.astype(np.float32), comps.astype(np.float32), learned=comps.shape[0])


def decode_thumbnail(data: bytes, size: int, draft: bool = True):
    """Decode image bytes to a grayscale ``(size, size) uint8`` thumbnail.

    Returns ``(thumbnail, (width, height))`` with the original size. With
    ``draft``, JPEGs decode straight to grayscale at the smallest DCT scale
    that keeps both sides >= ``size`` (most of the decoding work is skipped),
    then :func:`thumbnails` area-averages them. Without it the full image is
    decoded and resized exactly as ``imagehash`` does (:func:`gray_resize`).
    Raises PIL / OS errors for undecodable bytes: callers turn them into a
    per-sample reason.
    """
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        original = img.size
        if not draft:
            return gray_resize(img, size), original
        img.draft("L", (size, size))
        gray = np.asarray(img.convert("L"))
    return thumbnails([gray], size)[0], original


def thumbnails(images: list[np.ndarray], size: int) -> np.ndarray:
    """Decoded images ``(H, W, 3)`` RGB or ``(H, W)`` gray uint8 -> ``(B, size, size) uint8``.

    Grayscale (ITU-R 601 luma, as Pillow's "L") and area averaging, i.e. the
    mean of the pixels each output pixel covers: antialiased, and a plain
    box sum when the size divides evenly (the SSCD inputs, 320 = 10 x 32).
    The aspect ratio is not kept (like pHash). One array for the batch.
    """
    import cv2

    out = np.empty((len(images), size, size), dtype=np.uint8)
    for i, image in enumerate(images):
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
        out[i] = cv2.resize(gray, (size, size), interpolation=cv2.INTER_AREA)
    return out


def gray_resize(img, size: int) -> np.ndarray:
    """A PIL image to ``(size, size) uint8`` exactly as ``imagehash`` does (L, Lanczos)."""
    from PIL import Image

    return np.asarray(img.convert("L").resize((size, size), Image.Resampling.LANCZOS), dtype=np.uint8)


def features(thumbs: np.ndarray) -> np.ndarray:
    """Thumbnails ``(B, s, s)`` -> standardised vectors ``(B, s*s) float32``.

    A flat image (zero variance) maps to the zero vector.
    """
    thumbs = np.asarray(thumbs)
    x = thumbs.astype(np.float32).reshape(len(thumbs), int(np.prod(thumbs.shape[1:])))
    x = x - x.mean(axis=1, keepdims=True)
    std = x.std(axis=1, keepdims=True)
    return np.divide(x, std, out=np.zeros_like(x), where=std > 1e-3)


def dct_basis(size: int, n: int) -> np.ndarray:
    """The ``n`` lowest-frequency 2-D DCT-II basis images, DC excluded.

    Shape (n, size*size) float32, unit norm, in zigzag order of frequency.
    This is what PCA converges to on natural images; it completes a basis
    learned from a sample too small to give ``n`` principal directions.
    """
    k = np.arange(size)
    cos = np.cos(np.pi * (2 * k[None, :] + 1) * k[:, None] / (2 * size))  # (freq, pixel)
    freqs = sorted(((u, v) for u in range(size) for v in range(size) if u + v), key=lambda f: (sum(f), f))
    if n > len(freqs):
        raise ValueError(f"a {size}x{size} thumbnail has only {len(freqs)} non-constant DCT directions")
    basis = np.stack([np.outer(cos[u], cos[v]).ravel() for u, v in freqs[:n]])
    return (basis / np.linalg.norm(basis, axis=1, keepdims=True)).astype(np.float32)


def fit(sample: np.ndarray, n_bits: int, size: int, chunk: int = 65536) -> PCABasis:
    """Learn the hash basis from standardised vectors ``(n, size*size)``.

    The covariance is accumulated in float64 over chunks (memory D^2, not
    n*D), then eigendecomposed. Each component's sign is fixed (largest
    coefficient positive) so the same sample always gives the same codes.
    Directions without variance in the sample are replaced by DCT ones.
    """
    dim = size * size
    if n_bits > dim - 1:
        raise ValueError(f"n_bits={n_bits} needs thumbnails with more than {n_bits} pixels")
    n = len(sample)
    mean = np.zeros(dim, dtype=np.float64)
    for start in range(0, n, chunk):
        mean += sample[start : start + chunk].sum(axis=0, dtype=np.float64)
    mean /= max(n, 1)
    cov = np.zeros((dim, dim), dtype=np.float64)
    for start in range(0, n, chunk):
        x = sample[start : start + chunk].astype(np.float64) - mean
        cov += x.T @ x
    values, vectors = np.linalg.eigh(cov)  # ascending
    order = np.argsort(values)[::-1][:n_bits]
    keep = values[order] > _RANK_TOL * max(values[order[0]], 1e-30) if n > 1 else np.zeros(len(order), bool)
    comps = vectors[:, order[keep]].T
    comps *= np.sign(comps[np.arange(len(comps)), np.abs(comps).argmax(axis=1)])[:, None]
    learned = len(comps)
    if learned < n_bits:
        comps = np.vstack([comps, dct_basis(size, n_bits - learned)])
    return PCABasis(mean.astype(np.float32), comps.astype(np.float32), learned=learned)


def hash_codes(feats: np.ndarray, basis: PCABasis) -> np.ndarray:
    """Standardised vectors ``(B, D)`` -> packed codes ``(B, n_bits // 8) uint8``."""
    proj = (np.asarray(feats, dtype=np.float32) - basis.mean) @ basis.components.T
    return np.packbits(proj > 0, axis=1)
