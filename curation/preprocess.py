"""Image decoding and preprocessing for ViT inference, batched.

The transform is the standard evaluation one (DINOv2's ``make_classification_eval_transform``):
resize the short side to ``resize_size`` (bicubic), centre-crop ``image_size``,
scale to [0, 1] and normalise with the ImageNet mean and std. It is split in
two halves so that the expensive one runs where it is cheapest:

- :func:`decode` (CPU, on the decode threads of
  :class:`curation.models.inference.Inference`: Pillow releases the GIL while
  decoding and resampling) turns an encoded image into a uint8 ``(S, S, 3)``
  crop, four times smaller to move to the GPU than floats;
- :func:`normalise` (on the model's device) turns a batch of them into the
  float ``(B, 3, S, S)`` batch the model takes.

A failed decode is a per-image reason, never an exception: the caller turns
it into a sample status ``failed_decode:<reason>``.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INTERPOLATIONS = ("bicubic", "bilinear", "nearest", "lanczos")


@dataclass(frozen=True)
class PreprocessSpec:
    """How images become model inputs.

    ``resize_size`` defaults to ``image_size * 256 / 224`` rounded, the
    usual evaluation ratio. ``draft`` lets JPEG decoding downscale by 2, 4 or
    8 in the DCT domain when the image is that much larger than needed: much
    cheaper, and slightly different pixels from a full decode.
    """

    image_size: int = 224
    resize_size: int | None = None
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    draft: bool = False

    @property
    def short_side(self) -> int:
        if self.resize_size is not None:
            return self.resize_size
        return int(round(self.image_size * 256 / 224))


@dataclass
class DecodedBatch:
    """Result of :func:`decode_batch` for B inputs.

    ``pixels`` is ``(B, S, S, 3)`` uint8 (rows of failed images are zero);
    ``ok`` ``(B,)`` bool; ``reasons``/``errors`` per input, None where ok.
    """

    pixels: np.ndarray
    ok: np.ndarray
    reasons: list[str | None]
    errors: list[str | None]


class DecodeError(Exception):
    """An image that cannot be decoded; ``reason`` is a short status suffix."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


def _resample(name: str) -> int:
    from PIL import Image

    return {
        "bicubic": Image.Resampling.BICUBIC,
        "bilinear": Image.Resampling.BILINEAR,
        "nearest": Image.Resampling.NEAREST,
        "lanczos": Image.Resampling.LANCZOS,
    }[name]


def resized_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(width, height) with the short side set to ``short_side``, the long one truncated.

    Same rule as ``torchvision.transforms.Resize(int)``.
    """
    if width <= height:
        return short_side, int(short_side * height / width)
    return int(short_side * width / height), short_side


def open_rgb(data: bytes | None, draft_size: int | None = None):
    """Decode encoded image bytes to an RGB ``PIL.Image``; raises :class:`DecodeError`.

    ``draft_size``: let JPEG decoding downscale in the DCT domain while both
    sides stay at least that large.
    """
    return open_rgb_sized(data, draft_size)[0]


def open_rgb_sized(data: bytes | None, draft_size: int | None = None):
    """:func:`open_rgb`, plus the image's original ``(width, height)`` before any draft scaling."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise DecodeError("missing_image", "no image bytes")
    try:
        with Image.open(io.BytesIO(data)) as img:
            size = img.size
            if draft_size and img.format == "JPEG":
                img.draft("RGB", (draft_size, draft_size))
            return img.convert("RGB"), size
    except UnidentifiedImageError:
        # Pillow's message holds an object address: keep tables identical across reruns.
        raise DecodeError("unidentified_image", "not an image format Pillow can read") from None
    except Image.DecompressionBombError as err:
        raise DecodeError("decompression_bomb", str(err)) from None
    except (OSError, ValueError, SyntaxError, EOFError) as err:
        # Truncated files, broken data streams, bad headers: all the same to a caller.
        raise DecodeError("broken_image", f"{type(err).__name__}: {err}") from None


def decode(data: bytes | None, spec: PreprocessSpec) -> np.ndarray:
    """Decode, resize and centre-crop one image to ``(S, S, 3)`` uint8; raises :class:`DecodeError`."""
    # open_rgb has fully decoded the pixels (convert loads them): resizing cannot fail on the data.
    return _resize_crop(open_rgb(data, spec.short_side if spec.draft else None), spec)


def _resize_crop(img, spec: PreprocessSpec) -> np.ndarray:
    size = resized_size(img.width, img.height, spec.short_side)
    if size != (img.width, img.height):
        img = img.resize(size, resample=_resample(spec.interpolation))
    crop = spec.image_size
    # torchvision.transforms.CenterCrop's offsets, including its rounding.
    top = int(round((img.height - crop) / 2.0))
    left = int(round((img.width - crop) / 2.0))
    return np.asarray(img.crop((left, top, left + crop, top + crop)), dtype=np.uint8)


class PendingBatch:
    """Decoding in flight on an executor; :meth:`result` waits and returns the :class:`DecodedBatch`."""

    def __init__(self, pending, image_size: int):
        self._pending = pending
        self._image_size = image_size

    def result(self) -> DecodedBatch:
        return stack(self._pending.result(), self._image_size)


def submit_batch(
    items: Sequence, spec: PreprocessSpec, executor: Executor | None, fetch: Callable | None = None
) -> PendingBatch:
    """Start decoding ``items`` on ``executor`` and return at once (see
    :func:`curation.models.inference.submit`: items may be keys that ``fetch`` reads)."""
    from curation.models.inference import submit

    return PendingBatch(submit(items, functools.partial(decode, spec=spec), executor, fetch), spec.image_size)


def decode_batch(
    blobs: Sequence[bytes | None], spec: PreprocessSpec, executor: Executor | None = None
) -> DecodedBatch:
    """Decode ``blobs`` into one ``(B, S, S, 3)`` uint8 array; on ``executor`` threads if given."""
    return submit_batch(blobs, spec, executor).result()


def stack(decoded, image_size: int) -> DecodedBatch:
    """A :class:`curation.models.inference.Decoded` of eval crops as one :class:`DecodedBatch`."""
    ok = decoded.ok
    pixels = np.zeros((len(ok), image_size, image_size, 3), dtype=np.uint8)
    for i in np.flatnonzero(ok):
        pixels[i] = decoded.values[i]
    return DecodedBatch(pixels, ok, list(decoded.reasons), list(decoded.errors))


def normalise(pixels, mean=IMAGENET_MEAN, std=IMAGENET_STD, device=None):
    """uint8 ``(B, S, S, 3)`` (numpy or torch) -> float32 ``(B, 3, S, S)`` normalised, on ``device``.

    Equals ``ToTensor()`` then ``Normalize(mean, std)`` per image.
    """
    import torch

    x = torch.as_tensor(pixels)
    if device is not None:
        x = x.to(device, non_blocking=True)
    x = x.permute(0, 3, 1, 2).float().div_(255.0)
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return x.sub_(m).div_(s).contiguous()
