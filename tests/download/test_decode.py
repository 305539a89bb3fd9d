import numpy as np
import pytest

from curation.download.config import IMAGE_FORMATS
from curation.download.decode import DecodeError, decode, sniff
from curation.download.resize import encode_jpeg, min_decode_size, resize, target_size
from tests.download import images

MAX_PIXELS = 50_000_000


def _decode(data, min_size=None, formats=IMAGE_FORMATS):
    return decode(data, formats, MAX_PIXELS, min_size)


def _reason(data) -> str:
    with pytest.raises(DecodeError) as info:
        _decode(data)
    return info.value.reason


def test_sniff():
    assert sniff(images.jpeg()) == "jpeg"
    assert sniff(images.png16()) == "png"
    assert sniff(images.animated_gif()) == "gif"
    assert sniff(images.webp()) == "webp"
    assert sniff(images.html()) is None
    assert sniff(b"") is None


def test_jpeg_rgb():
    decoded = _decode(images.jpeg(640, 480))
    assert decoded.pixels.shape == (480, 640, 3) and decoded.pixels.dtype == np.uint8
    assert (decoded.width, decoded.height, decoded.format) == (640, 480, "jpeg")


def test_reduced_scale_jpeg_decode_never_below_target():
    data = images.jpeg(2000, 1000)
    floor = min_decode_size("shorter_side", 200)  # target 400x200: 1/4 scale (500x250) is the smallest >= it
    decoded = _decode(data, floor)
    assert decoded.pixels.shape == (250, 500, 3)
    assert (decoded.width, decoded.height) == (2000, 1000)  # original size is reported


@pytest.mark.parametrize(
    "maker, reason",
    [
        (images.html, "not_image"),
        (lambda: b"", "not_image"),
        (images.truncated_jpeg, "corrupt"),
        (images.corrupt_png, "corrupt"),
        (lambda: images.png_header_only(30000, 30000), "too_many_pixels"),
        (images.png_bomb, "too_many_pixels"),
    ],
)
def test_bad_inputs(maker, reason):
    assert _reason(maker()) == reason


def test_unsupported_format_is_refused():
    with pytest.raises(DecodeError) as info:
        _decode(images.webp(), formats=("jpeg", "png"))
    assert info.value.reason == "unsupported_format"


def test_cmyk_jpeg_to_rgb():
    decoded = _decode(images.cmyk_jpeg())
    assert decoded.pixels.shape == (60, 80, 3)
    # Built as RGB (0, 128, 255) then converted to CMYK and back.
    assert np.abs(decoded.pixels.reshape(-1, 3).mean(0) - (0, 128, 255)).max() < 6


def test_16_bit_png_keeps_its_range():
    decoded = _decode(images.png16(value=40000))
    assert decoded.pixels.shape == (40, 50, 3)
    assert np.all(decoded.pixels == round(40000 / 257))


def test_palette_transparency_onto_white():
    pixels = _decode(images.palette_png_transparent()).pixels
    assert pixels.shape == (20, 40, 3)
    assert np.all(pixels[:, :20] == 255)
    assert np.all(pixels[:, 20:] == (255, 0, 0))


def test_animated_gif_first_frame():
    pixels = _decode(images.animated_gif()).pixels
    assert pixels.shape == (20, 30, 3)
    assert np.all(pixels == (255, 0, 0))


@pytest.mark.parametrize("orientation, black_at", [(1, "left"), (6, "top"), (8, "bottom"), (3, "right")])
def test_exif_orientation_applied(orientation, black_at):
    decoded = _decode(images.exif_rotated_jpeg(orientation))
    pixels = decoded.pixels.mean(axis=2)
    rotated = orientation in (6, 8)
    assert pixels.shape == ((60, 40) if rotated else (40, 60))
    assert (decoded.width, decoded.height) == ((40, 60) if rotated else (60, 40))
    assert decoded.oriented == (orientation != 1)
    halves = {
        "left": (pixels[:, :25], pixels[:, -25:]),
        "right": (pixels[:, -25:], pixels[:, :25]),
        "top": (pixels[:25], pixels[-25:]),
        "bottom": (pixels[-25:], pixels[:25]),
    }
    dark, light = halves[black_at]
    assert dark.mean() < 30 and light.mean() > 225


def test_webp():
    decoded = _decode(images.webp(120, 90))
    assert decoded.pixels.shape == (90, 120, 3) and decoded.format == "webp"


@pytest.mark.parametrize(
    "size, mode, target, expected",
    [
        ((2000, 1000), "shorter_side", 256, (512, 256)),
        ((2000, 1000), "max_side", 256, (256, 128)),
        ((1000, 2000), "max_side", 256, (128, 256)),
        ((300, 200), "shorter_side", 256, (300, 200)),  # never upscaled
        ((300, 200), "max_side", 256, (256, 171)),
        ((5000, 10), "max_side", 256, (256, 1)),  # at least one pixel
        ((2000, 1000), "none", 256, (2000, 1000)),
    ],
)
def test_target_size(size, mode, target, expected):
    assert target_size(*size, mode, target) == expected


def test_resize_and_encode_round_trip():
    pixels = _decode(images.jpeg(640, 480)).pixels
    small = resize(pixels, 320, 240)
    assert small.shape == (240, 320, 3)
    assert resize(small, 320, 240) is small
    again = _decode(encode_jpeg(small, 90)).pixels
    assert again.shape == (240, 320, 3)
    assert np.abs(again.astype(int) - small.astype(int)).mean() < 4
