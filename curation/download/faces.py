"""Face blurring before storing: pluggable detectors, Gaussian blur of each box.

A detector is a class registered with :func:`register_detector`; it is built
once per worker thread from the ``FacesConfig`` and maps an (H, W, 3) uint8
RGB image to an (N, 4) int array of boxes ``x, y, w, h`` in pixels. The
default, ``haar``, is OpenCV's frontal-face Haar cascade (needs opencv<5).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from curation.download.plugins import Registry
from curation.errors import ConfigError

FaceDetector = Callable[[np.ndarray], np.ndarray]
DETECTORS = Registry("face detector")
register_detector = DETECTORS.register


def make_detector(cfg, key: str = "download.faces") -> FaceDetector:
    return DETECTORS.get(cfg.backend, f"{key}.backend")(cfg)


@register_detector("haar")
class HaarDetector:
    def __init__(self, cfg):
        self.cfg = cfg
        self._cascade = load_haar_cascade()

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        import cv2

        grey = cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY)
        boxes = self._cascade.detectMultiScale(
            grey,
            scaleFactor=self.cfg.scale_factor,
            minNeighbors=self.cfg.min_neighbors,
            minSize=(self.cfg.min_size, self.cfg.min_size),
        )
        return np.asarray(boxes, dtype=np.int64).reshape(-1, 4)


def load_haar_cascade():
    """OpenCV's frontal-face cascade; ConfigError when this OpenCV cannot provide it."""
    try:
        import cv2
    except ImportError as err:
        raise ConfigError(f"download.faces.enabled: OpenCV is not installed ({err})") from None
    if not hasattr(cv2, "CascadeClassifier") or not hasattr(cv2, "data"):
        raise ConfigError(
            "download.faces.backend: this OpenCV has no Haar cascades (OpenCV 5 removed them); "
            "install opencv-python-headless<5"
        )
    # cv2's stubs omit cv2.data (checked above).
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")  # type: ignore[attr-defined]
    if cascade.empty():
        raise ConfigError("download.faces.backend: haarcascade_frontalface_default.xml failed to load")
    return cascade


def blur_boxes(pixels: np.ndarray, boxes: np.ndarray, sigma_fraction: float) -> np.ndarray:
    """Copy of ``pixels`` with each box (x, y, w, h) Gaussian-blurred (sigma = fraction x side)."""
    if len(boxes) == 0:
        return pixels
    import cv2

    out = pixels.copy()
    height, width = out.shape[:2]
    for x, y, w, h in boxes:
        # A margin so that the blur covers the face's edge, not only its centre.
        mx, my = int(0.1 * w), int(0.1 * h)
        x0, y0 = max(0, x - mx), max(0, y - my)
        x1, y1 = min(width, x + w + mx), min(height, y + h + my)
        if x1 <= x0 or y1 <= y0:
            continue
        sigma = max(1.0, sigma_fraction * max(w, h))
        out[y0:y1, x0:x1] = cv2.GaussianBlur(out[y0:y1, x0:x1], (0, 0), sigmaX=sigma, sigmaY=sigma)
    return out
