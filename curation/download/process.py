"""Downloaded bytes to a stored image: decode, resize, blur faces, score NSFW, encode."""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass

from curation.download.decode import DecodeError, decode
from curation.download.resize import encode_jpeg, min_decode_size, resize, target_size


@dataclass
class ImageResult:
    """What the stage records of one decoded image; ``data`` is the stored JPEG."""

    status: str
    error: str | None = None
    data: bytes | None = None
    format: str | None = None
    sha256_original: str | None = None
    sha256: str | None = None
    original_width: int | None = None
    original_height: int | None = None
    width: int | None = None
    height: int | None = None
    nsfw_score: float | None = None
    faces_blurred: int | None = None


class ImageProcessor:
    """Callable on original bytes; thread-safe (detectors are built per thread)."""

    def __init__(self, image_cfg, faces_cfg=None, nsfw_cfg=None):
        self.cfg = image_cfg
        self.faces_cfg = faces_cfg if faces_cfg is not None and faces_cfg.enabled else None
        self.nsfw_cfg = nsfw_cfg if nsfw_cfg is not None and nsfw_cfg.enabled else None
        self._min_size = min_decode_size(image_cfg.resize, image_cfg.size)
        self._local = threading.local()

    def _models(self):
        local = self._local
        if not hasattr(local, "faces"):
            from curation.download.faces import make_detector
            from curation.download.nsfw import make_scorer

            local.faces = make_detector(self.faces_cfg) if self.faces_cfg else None
            local.nsfw = make_scorer(self.nsfw_cfg) if self.nsfw_cfg else None
        return local.faces, local.nsfw

    def __call__(self, data: bytes) -> ImageResult:
        sha_original = hashlib.sha256(data).hexdigest()
        try:
            decoded = decode(data, self.cfg.formats, self.cfg.max_pixels, self._min_size)
        except DecodeError as err:
            return ImageResult(f"failed_decode:{err.reason}", error=err.detail, sha256_original=sha_original)
        width, height = target_size(decoded.width, decoded.height, self.cfg.resize, self.cfg.size)
        pixels = resize(decoded.pixels, width, height)
        faces, nsfw = self._models()
        blurred = 0
        if faces is not None and self.faces_cfg is not None:  # a detector exists only with faces_cfg
            from curation.download.faces import blur_boxes

            boxes = faces(pixels)
            blurred = len(boxes)
            pixels = blur_boxes(pixels, boxes, self.faces_cfg.blur_sigma)
        score = float(nsfw(pixels)) if nsfw is not None else None
        if self._keep(decoded, width, height, blurred):
            stored = data
        else:
            stored = encode_jpeg(pixels, self.cfg.jpeg_quality)
        return ImageResult(
            "success",
            data=stored,
            format=decoded.format,
            sha256_original=sha_original,
            sha256=hashlib.sha256(stored).hexdigest(),
            original_width=decoded.width,
            original_height=decoded.height,
            width=width,
            height=height,
            nsfw_score=score,
            faces_blurred=blurred if faces is not None else None,
        )

    def _keep(self, decoded, width: int, height: int, blurred: int) -> bool:
        """Store the original bytes: a plain JPEG already within the target, nothing changed."""
        return (
            self.cfg.keep_original
            and decoded.format == "jpeg"
            and decoded.mode == "RGB"
            and not decoded.oriented
            and not blurred
            and (width, height) == (decoded.width, decoded.height)
        )
