"""Target sizes, downscaling and JPEG encoding. Pixels are (H, W, 3) uint8 RGB."""

from __future__ import annotations

import functools

import numpy as np


def target_size(width: int, height: int, mode: str, size: int) -> tuple[int, int]:
    """(width, height) after resizing: ``size`` bounds the longer (max_side) or
    shorter (shorter_side) side, aspect kept, never upscaled; ``none`` keeps it."""
    if mode == "none":
        return width, height
    side = max(width, height) if mode == "max_side" else min(width, height)
    if side <= size:
        return width, height
    scale = size / side
    return max(1, round(width * scale)), max(1, round(height * scale))


def min_decode_size(mode: str, size: int):
    """The ``min_size`` callback of ``decode``: a reduced decode never goes below the target."""

    def floor(width: int, height: int) -> tuple[int, int]:
        return target_size(width, height, mode, size)

    return floor


def resize(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    """Downscale with pixel-area averaging (no aliasing); same size is a no-op."""
    if pixels.shape[1] == width and pixels.shape[0] == height:
        return pixels
    cv2 = _cv2()
    interpolation = cv2.INTER_AREA if width <= pixels.shape[1] else cv2.INTER_CUBIC
    return cv2.resize(pixels, (width, height), interpolation=interpolation)


@functools.cache
def _cv2():
    import cv2

    # The worker's decode threads are the parallelism: OpenCV's own pool would split each
    # resize across CPUs those threads already keep busy (measured: 2-3 % more CPU per image).
    cv2.setNumThreads(1)
    return cv2


def encode_jpeg(pixels: np.ndarray, quality: int) -> bytes:
    import simplejpeg

    return simplejpeg.encode_jpeg(
        np.ascontiguousarray(pixels), quality=quality, colorspace="RGB", colorsubsampling="420"
    )
