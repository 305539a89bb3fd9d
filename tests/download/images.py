"""Generated test images (from skimage's astronaut), good and bad, as bytes."""

from __future__ import annotations

import io
import struct
import zlib
from functools import lru_cache

import numpy as np
from PIL import Image


@lru_cache(maxsize=1)
def astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()  # (512, 512, 3) uint8


def encode(image: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **params)
    return buf.getvalue()


def jpeg(width: int = 640, height: int = 480, quality: int = 90) -> bytes:
    return encode(Image.fromarray(astronaut()).resize((width, height)), "JPEG", quality=quality)


def solid(width: int, height: int, colour=(200, 30, 30), mode: str = "RGB") -> Image.Image:
    return Image.new("RGB", (width, height), colour).convert(mode)


def truncated_jpeg() -> bytes:
    data = jpeg()
    return data[: len(data) // 2]


def corrupt_png() -> bytes:
    good = encode(solid(64, 64), "PNG")
    # Signature and IHDR intact, image data overwritten.
    return good[:41] + bytes(range(256)) * 4


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims ``width x height`` (8-bit grey) with a tiny data stream."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def png_bomb(side: int = 20000) -> bytes:
    """A valid 1-bit PNG of ``side x side`` zeros: ~50 KB that decode to ``side**2`` pixels."""
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    packer = zlib.compressobj(9)
    row = b"\x00" * (1 + (side + 7) // 8)
    idat = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def cmyk_jpeg() -> bytes:
    return encode(solid(80, 60, (0, 128, 255), "CMYK"), "JPEG", quality=95)


def png16(width: int = 50, height: int = 40, value: int = 40000) -> bytes:
    return encode(Image.fromarray(np.full((height, width), value, np.uint16)), "PNG")


def palette_png_transparent() -> bytes:
    """Palette PNG: left half transparent (index 0), right half opaque red (index 1)."""
    image = Image.new("P", (40, 20), 0)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * (256 * 3 - 6))
    image.paste(1, (20, 0, 40, 20))
    return encode(image, "PNG", transparency=0)


def animated_gif() -> bytes:
    frames = [solid(30, 20, c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def exif_rotated_jpeg(orientation: int = 6) -> bytes:
    """A 60x40 JPEG, left half black and right half white, tagged with ``orientation``."""
    pixels = np.zeros((40, 60, 3), np.uint8)
    pixels[:, 30:] = 255
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(Image.fromarray(pixels), "JPEG", quality=95, exif=exif.tobytes())


def webp(width: int = 120, height: int = 90) -> bytes:
    return encode(Image.fromarray(astronaut()).resize((width, height)), "WEBP", quality=90)


def html() -> bytes:
    return b"<!doctype html><html><body>not an image</body></html>"
