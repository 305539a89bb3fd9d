"""NSFW scoring: pluggable backends mapping an image to a score in [0, 1].

A backend is a class registered with :func:`register_backend`, built once per
worker thread from the ``NsfwConfig``; called on an (H, W, 3) uint8 RGB image
it returns a float score, higher meaning more explicit. The default,
``nudenet``, runs NudeNet's ONNX detector offline (the ``320n.onnx`` file
shipped inside the nudenet wheel) and scores an image by its most confident
detection of an exposed intimate body part. nudenet is an optional extra
(``pip install curation[nsfw]``): its wheel metadata says MIT, but it ships
an AGPL-3.0 licence file.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from curation.download.plugins import Registry
from curation.errors import ConfigError

NsfwScorer = Callable[[np.ndarray], float]
BACKENDS = Registry("NSFW backend")
register_backend = BACKENDS.register

# NudeNet classes that make an image explicit; covered parts, faces and feet do not.
EXPLICIT_CLASSES = frozenset(
    {
        "FEMALE_BREAST_EXPOSED",
        "FEMALE_GENITALIA_EXPOSED",
        "MALE_GENITALIA_EXPOSED",
        "ANUS_EXPOSED",
        "BUTTOCKS_EXPOSED",
    }
)


def make_scorer(cfg, key: str = "download.nsfw") -> NsfwScorer:
    return BACKENDS.get(cfg.backend, f"{key}.backend")(cfg)


def check_backend(cfg, key: str = "download.nsfw") -> None:
    """Config-tier check, before any work: the backend exists and its dependencies are installed."""
    check = getattr(BACKENDS.get(cfg.backend, f"{key}.backend"), "check", None)
    if check is not None:
        check(cfg, key)


@register_backend("nudenet")
class NudeNetScorer:
    def __init__(self, cfg):
        self.check(cfg)
        from nudenet import NudeDetector

        self._detector = NudeDetector(model_path=cfg.model_path)

    @staticmethod
    def check(cfg, key: str = "download.nsfw") -> None:
        from pathlib import Path

        try:
            import nudenet  # noqa: F401
        except ImportError:
            raise ConfigError(
                f"{key}.enabled: the nudenet backend needs the optional 'nsfw' extra "
                "(pip install 'curation[nsfw]'; nudenet ships an AGPL-3.0 licence file)"
            ) from None
        if cfg.model_path is not None and not Path(cfg.model_path).is_file():
            raise ConfigError(f"{key}.model_path: '{cfg.model_path}' is not a file")

    def detections(self, pixels: np.ndarray) -> list[dict]:
        # NudeNet's reader takes OpenCV's BGR order.
        return self._detector.detect(np.ascontiguousarray(pixels[..., ::-1]))

    def __call__(self, pixels: np.ndarray) -> float:
        return explicit_score(self.detections(pixels))


def explicit_score(detections: list[dict]) -> float:
    """Highest score among explicit-class detections (0.0 when none)."""
    scores = [float(d["score"]) for d in detections if d["class"] in EXPLICIT_CLASSES]
    return max(scores, default=0.0)
