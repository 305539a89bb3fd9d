"""Face blurring, NSFW scoring and the whole per-image processor."""

import numpy as np
import pytest

from curation.download.config import FacesConfig, ImageConfig, NsfwConfig
from curation.download.decode import decode
from curation.download.faces import blur_boxes, make_detector
from curation.download.nsfw import explicit_score, make_scorer, register_backend
from curation.download.process import ImageProcessor
from curation.errors import ConfigError
from tests.download import images


def test_haar_finds_the_astronaut_face_and_blurs_it():
    detector = make_detector(FacesConfig(enabled=True))
    pixels = images.astronaut()
    boxes = detector(pixels)
    assert len(boxes) == 1
    x, y, w, h = boxes[0]
    assert 150 < x + w / 2 < 260 and 60 < y + h / 2 < 170  # the face is around (220, 115)
    blurred = blur_boxes(pixels, boxes, 0.25)
    face = (slice(y, y + h), slice(x, x + w))
    assert (
        np.abs(np.diff(blurred[face].astype(int), axis=1)).mean()
        < 0.5 * np.abs(np.diff(pixels[face].astype(int), axis=1)).mean()
    )
    assert np.array_equal(blurred[400:], pixels[400:])  # outside the box: untouched


def test_no_face_on_a_flat_image():
    assert len(make_detector(FacesConfig(enabled=True))(np.full((200, 200, 3), 127, np.uint8))) == 0


def test_unknown_backends_are_config_errors():
    with pytest.raises(ConfigError, match="download.faces.backend"):
        make_detector(FacesConfig(enabled=True, backend="nope"))
    with pytest.raises(ConfigError, match="download.nsfw.backend"):
        make_scorer(NsfwConfig(enabled=True, backend="nope"))


def test_nudenet_scores_a_clothed_portrait_low():
    pytest.importorskip("nudenet")
    scorer = make_scorer(NsfwConfig(enabled=True))
    detections = scorer.detections(images.astronaut())
    assert any(d["class"] == "FACE_FEMALE" for d in detections)
    assert scorer(images.astronaut()) == explicit_score(detections) < 0.2


def test_explicit_score_ignores_covered_and_faces():
    detections = [
        {"class": "FACE_FEMALE", "score": 0.9},
        {"class": "BELLY_COVERED", "score": 0.8},
        {"class": "BUTTOCKS_EXPOSED", "score": 0.6},
    ]
    assert explicit_score(detections) == 0.6
    assert explicit_score(detections[:2]) == 0.0


@register_backend("test_redness")
class RednessScorer:
    """Share of strongly red pixels: a real, trivial backend to exercise the registry."""

    def __init__(self, cfg):
        self.cfg = cfg

    def __call__(self, pixels):
        red = (pixels[..., 0] > 200) & (pixels[..., 1] < 60) & (pixels[..., 2] < 60)
        return float(red.mean())


def test_processor_resizes_blurs_and_scores():
    processor = ImageProcessor(
        ImageConfig(resize="max_side", size=256, jpeg_quality=90),
        FacesConfig(enabled=True, min_size=16),
        NsfwConfig(enabled=True, backend="test_redness"),
    )
    result = processor(images.jpeg(1024, 1024))
    assert result.status == "success"
    assert (result.original_width, result.original_height, result.width, result.height) == (1024, 1024, 256, 256)
    assert result.faces_blurred == 1
    assert 0.0 <= result.nsfw_score < 0.1
    stored = decode(result.data, ("jpeg",), 10**8)
    assert stored.pixels.shape == (256, 256, 3)
    assert result.sha256 != result.sha256_original


def test_processor_keeps_original_jpeg_when_allowed():
    data = images.jpeg(200, 100)
    keep = ImageProcessor(ImageConfig(size=256, keep_original=True))(data)
    assert keep.data == data and keep.sha256 == keep.sha256_original
    again = ImageProcessor(ImageConfig(size=256, keep_original=False))(data)
    assert again.data != data and (again.width, again.height) == (200, 100)
    rotated = ImageProcessor(ImageConfig(size=256, keep_original=True))(images.exif_rotated_jpeg(6))
    assert rotated.data != images.exif_rotated_jpeg(6)  # orientation had to be applied


def test_processor_failure_keeps_the_hash():
    result = ImageProcessor(ImageConfig())(images.truncated_jpeg())
    assert result.status == "failed_decode:corrupt" and len(result.sha256_original) == 64
