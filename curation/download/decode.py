"""Safe image decoding: sniffed format, pixel limit before decoding, any mode to RGB.

The format comes from the magic bytes, never from Content-Type. The size is
read from the header and checked against ``max_pixels`` before a pixel is
decoded, which stops decompression bombs. JPEGs are decoded at a reduced DCT
scale when the target is much smaller (a multiple of 1/8 of the side with
simplejpeg; 1/2, 1/4 or 1/8 with Pillow), where most of the decode time is
saved. EXIF orientation is applied; transparency
is composited onto white; 16-bit data is reduced to 8 bits.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

# (format, PIL plugin name) by magic bytes.
_MAGIC = (
    (b"\xff\xd8\xff", "jpeg", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "png", "PNG"),
    (b"GIF87a", "gif", "GIF"),
    (b"GIF89a", "gif", "GIF"),
    (b"BM", "bmp", "BMP"),
    (b"II*\x00", "tiff", "TIFF"),
    (b"MM\x00*", "tiff", "TIFF"),
)
_PIL_NAME = {fmt: name for _, fmt, name in _MAGIC} | {"webp": "WEBP"}
# EXIF orientation -> PIL transposes that undo it.
_ORIENT = {
    2: (Image.Transpose.FLIP_LEFT_RIGHT,),
    3: (Image.Transpose.ROTATE_180,),
    4: (Image.Transpose.FLIP_TOP_BOTTOM,),
    5: (Image.Transpose.TRANSPOSE,),
    6: (Image.Transpose.ROTATE_270,),
    7: (Image.Transpose.TRANSVERSE,),
    8: (Image.Transpose.ROTATE_90,),
}
_FAST_JPEG_MODES = ("RGB", "L")

# Our own ``max_pixels`` check replaces Pillow's global bomb guard; truncated
# files must fail, never decode half-grey.
ImageFile.LOAD_TRUNCATED_IMAGES = False
warnings.simplefilter("ignore", Image.DecompressionBombWarning)


class DecodeError(Exception):
    """A sample-tier decode failure; ``reason`` is the status suffix."""

    def __init__(self, reason: str, detail: str | None = None):
        super().__init__(detail or reason)
        self.reason = reason
        self.detail = detail


@dataclass
class Decoded:
    """An image as RGB pixels. ``pixels``: (H, W, 3) uint8, orientation applied.

    ``width``/``height`` are the displayed size of the original (before any
    reduced-scale decode); ``oriented`` says an EXIF transpose was applied.
    """

    pixels: np.ndarray
    format: str
    width: int
    height: int
    oriented: bool
    mode: str


def sniff(data: bytes) -> str | None:
    """Image format from the leading bytes, or None when it is not an image we know."""
    head = data[:16]
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    for magic, fmt, _ in _MAGIC:
        if head.startswith(magic):
            return fmt
    return None


# Leading bytes (lower-cased) of common non-image answers -> their name in ``not_image`` errors.
_OTHER_MAGIC = (
    (b"%pdf", "pdf"),
    (b"\x1f\x8b", "gzip"),
    (b"pk\x03\x04", "zip"),
    (b"\x00\x00\x01\x00", "ico"),
    (b"<?xml", "xml"),
    (b"<svg", "svg"),
    (b"<!doctype html", "html"),
    (b"<html", "html"),
    (b"{", "json"),
    (b"[", "json"),
)


def content_kind(data: bytes) -> str:
    """What non-image bytes look like (html, json, text, binary, ...): a label, never the bytes."""
    if not data:
        return "empty"
    head = data[:64].lstrip().lower()
    if data[4:8] == b"ftyp":
        return "isobmff"  # AVIF, HEIC, MP4
    for magic, kind in _OTHER_MAGIC:
        if head.startswith(magic):
            return kind
    try:
        data[:1024].decode("utf-8")
    except UnicodeDecodeError as err:
        if err.start < 1020:  # not a character cut at the boundary
            return "binary"
    return "text"


def _corrupt(fmt: str, data: bytes, err: BaseException) -> str:
    # The exception's message is left out: Pillow quotes bytes of the file (a PNG chunk name, a TIFF tag).
    return f"{fmt}, {len(data)} bytes: {type(err).__name__}"


# (stored width, stored height) -> smallest (width, height) the decoder may return.
MinSize = Callable[[int, int], tuple[int, int]]


def decode(data: bytes, formats, max_pixels: int, min_size: MinSize | None = None) -> Decoded:
    """Decode ``data`` to RGB. Raises :class:`DecodeError` for any bad input.

    ``min_size`` allows a reduced-scale JPEG decode down to that size.
    """
    fmt = sniff(data)
    if fmt is None:
        raise DecodeError("not_image", f"{content_kind(data)}, {len(data)} bytes")
    if fmt not in formats:
        raise DecodeError("unsupported_format", fmt)
    try:
        image = Image.open(io.BytesIO(data), formats=[_PIL_NAME[fmt]])
    except Image.DecompressionBombError:
        raise DecodeError("too_many_pixels", f"{fmt}, {len(data)} bytes: over Pillow's limit") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as err:
        raise DecodeError("corrupt", _corrupt(fmt, data, err)) from None
    width, height = image.size
    if width < 1 or height < 1:
        raise DecodeError("corrupt", f"size {width}x{height}")
    if width * height > max_pixels:
        raise DecodeError("too_many_pixels", f"{width}x{height} > {max_pixels}")
    try:
        if fmt == "jpeg" and image.mode in _FAST_JPEG_MODES:
            pixels = _decode_jpeg(data, width, height, min_size)
        else:
            pixels = _decode_pil(image, fmt, min_size)
    except DecodeError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, MemoryError) as err:
        # Pillow and libjpeg report damaged data with any of these.
        raise DecodeError("corrupt", _corrupt(fmt, data, err)) from None
    # Read after decoding: for some formats Pillow loads the image to find EXIF,
    # and a failure there must not be mistaken for a missing tag.
    orientation = _orientation(image)
    transposes = _ORIENT.get(orientation, ())
    if transposes:
        pixels = _transpose(pixels, transposes)
        if orientation >= 5:
            width, height = height, width
    return Decoded(pixels, fmt, width, height, bool(transposes), image.mode)


def _orientation(image: Image.Image) -> int:
    try:
        value = image.getexif().get(0x0112, 1)
    except Exception:  # a broken EXIF block is no reason to drop the image
        return 1
    return value if isinstance(value, int) else 1


def _decode_jpeg(data: bytes, width: int, height: int, min_size: MinSize | None) -> np.ndarray:
    import simplejpeg

    min_w, min_h = min_size(width, height) if min_size else (0, 0)
    return simplejpeg.decode_jpeg(data, colorspace="RGB", min_width=min_w, min_height=min_h, strict=True)


def _decode_pil(image: Image.Image, fmt: str, min_size: MinSize | None) -> np.ndarray:
    if fmt == "jpeg" and min_size is not None:
        image.draft(None, min_size(*image.size))  # reduced DCT scale, as for the fast path
    image.load()  # first frame only for animated images
    return to_rgb(image)


def to_rgb(image: Image.Image) -> np.ndarray:
    """Any Pillow mode to an (H, W, 3) uint8 RGB array; transparency onto white."""
    mode = image.mode
    if mode == "RGB":
        return np.asarray(image)
    if mode.startswith("I;16") or mode in ("I", "F"):
        return _deep_to_rgb(np.asarray(image))
    if (mode == "P" and "transparency" in image.info) or mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float32)
        alpha = rgba[..., 3:4] / 255.0
        return (rgba[..., :3] * alpha + 255.0 * (1.0 - alpha) + 0.5).astype(np.uint8)
    return np.asarray(image.convert("RGB"))


def _deep_to_rgb(values: np.ndarray) -> np.ndarray:
    """16-bit, 32-bit integer or float grey to 8 bits: 16-bit range kept, else clipped."""
    values = values.astype(np.float64)
    if values.size and values.max() > 255:
        values = values / 257.0  # 65535 -> 255
    grey = np.clip(values + 0.5, 0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def _transpose(pixels: np.ndarray, transposes) -> np.ndarray:
    image = Image.fromarray(pixels)
    for op in transposes:
        image = image.transpose(op)
    return np.asarray(image)
