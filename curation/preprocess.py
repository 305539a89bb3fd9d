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

import io
from dataclasses import dataclass

import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INTERPOLATIONS = ("bicubic", "bilinear", "nearest", "lanczos")


@dataclass(frozen=True)
class PreprocessSpec:
    """How images become model inputs: the one spec of every model that reads images.

    ``mode``:

    - ``crop`` (the evaluation transform): resize the short side to
      ``resize_size``, then centre-crop ``image_size`` x ``image_size``;
      ``resize_size`` defaults to ``image_size * 256 / 224`` rounded, the usual
      evaluation ratio;
    - ``square``: resize to ``image_size`` x ``image_size``, skewing (SSCD's 320
      recipe; batches well);
    - ``short_edge``: resize the short side to ``image_size``, keeping the
      aspect ratio (images of equal shape batch together).

    ``draft`` lets JPEG decoding downscale by 2, 4 or 8 in the DCT domain when
    the image is that much larger than needed: much cheaper, and slightly
    different pixels from a full decode.
    """

    image_size: int = 224
    resize_size: int | None = None
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    draft: bool = False
    mode: str = "crop"

    @property
    def short_side(self) -> int:
        """The short side after resizing."""
        if self.mode != "crop":
            return self.image_size
        if self.resize_size is not None:
            return self.resize_size
        return int(round(self.image_size * 256 / 224))


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
    """Decode one image to its model input (:func:`model_input`); raises :class:`DecodeError`."""
    return model_input(open_rgb(data, draft_size(spec)), spec)


def draft_size(spec: PreprocessSpec) -> int | None:
    """The ``draft_size`` of :func:`open_rgb` for ``spec`` (None: no draft decoding)."""
    return spec.short_side if spec.draft else None


def model_input(img, spec: PreprocessSpec) -> np.ndarray:
    """An RGB ``PIL.Image`` (:func:`open_rgb`) as the model input of ``spec``: ``(H, W, 3)`` uint8.

    ``(S, S, 3)`` unless ``spec.mode`` is ``short_edge``.
    """
    # open_rgb has fully decoded the pixels (convert loads them): resizing cannot fail on the data.
    if spec.mode == "crop":
        return _resize_crop(img, spec)
    if spec.mode == "square":
        size = (spec.image_size, spec.image_size)
    else:
        size = resized_size(img.width, img.height, spec.image_size)
    return np.asarray(img.resize(size, _resample(spec.interpolation)), dtype=np.uint8)


def _resize_crop(img, spec: PreprocessSpec) -> np.ndarray:
    size = resized_size(img.width, img.height, spec.short_side)
    if size != (img.width, img.height):
        img = img.resize(size, resample=_resample(spec.interpolation))
    crop = spec.image_size
    # torchvision.transforms.CenterCrop's offsets, including its rounding.
    top = int(round((img.height - crop) / 2.0))
    left = int(round((img.width - crop) / 2.0))
    return np.asarray(img.crop((left, top, left + crop, top + crop)), dtype=np.uint8)


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
