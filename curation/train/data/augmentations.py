"""DINOv2's multi-crop augmentation (``data/augmentations.py``), with explicit RNGs.

Global crops: bicubic random-resized crop (scale 0.32-1), flip, colour jitter
(0.4, 0.4, 0.2, 0.1) with p=0.8, grayscale p=0.2, Gaussian blur (sigma
0.1-2), and solarise
(p=0.2) on the second. Local crops: the same at a small size and scale
(0.05-0.32). Every random choice comes from a ``numpy.random.Generator``
seeded by the sample's stream position, so a resumed run sees the same crops.
Crops are uint8 [3, H, W]; :func:`normalize` turns batches into model input
on the training device (4x less data through the loader than float32).

Blur probabilities: DINOv2's ``GaussianBlur(p)`` passes ``1 - p`` to
``RandomApply``, so its released models were trained with 0 / 0.9 / 0.5 for
global 1 / global 2 / local instead of the intended 1.0 / 0.1 / 0.5.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image, ImageFilter

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BLUR_PROBABILITIES = {"intended": (1.0, 0.1, 0.5), "official": (0.0, 0.9, 0.5)}


def random_resized_crop_box(
    width: int,
    height: int,
    scale: tuple[float, float],
    rng: np.random.Generator,
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> tuple[int, int, int, int]:
    """(top, left, h, w) as torchvision's ``RandomResizedCrop.get_params``:
    10 tries of a random area and log-uniform aspect ratio, else a centre crop."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        w, h = int(round(height * ratio[1])), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


class MultiCrop:
    """``MultiCrop(...)(image, rng)`` -> {"global": [uint8 [3, G, G]] * 2, "local": [uint8 [3, L, L]] * n}."""

    def __init__(
        self,
        global_size: int = 224,
        local_size: int = 96,
        num_local: int = 8,
        global_scale: tuple[float, float] = (0.32, 1.0),
        local_scale: tuple[float, float] = (0.05, 0.32),
        blur_probabilities: tuple[float, float, float] = BLUR_PROBABILITIES["intended"],
        solarize_probability: float = 0.2,
    ):
        self.global_size, self.local_size, self.num_local = global_size, local_size, num_local
        self.global_scale, self.local_scale = global_scale, local_scale
        self.blur = blur_probabilities
        self.solarize_probability = solarize_probability

    def __call__(self, image: Image.Image, rng: np.random.Generator) -> dict[str, list[torch.Tensor]]:
        g1 = self._crop(image, self.global_size, self.global_scale, self.blur[0], 0.0, rng)
        g2 = self._crop(image, self.global_size, self.global_scale, self.blur[1], self.solarize_probability, rng)
        local = [
            self._crop(image, self.local_size, self.local_scale, self.blur[2], 0.0, rng) for _ in range(self.num_local)
        ]
        return {"global": [g1, g2], "local": local}

    def _crop(
        self,
        image: Image.Image,
        size: int,
        scale: tuple[float, float],
        blur: float,
        solarize: float,
        rng: np.random.Generator,
    ) -> torch.Tensor:
        import torchvision.transforms.functional as TF

        top, left, h, w = random_resized_crop_box(image.width, image.height, scale, rng)
        out = TF.resized_crop(image, top, left, h, w, [size, size], TF.InterpolationMode.BICUBIC)
        if rng.random() < 0.5:
            out = TF.hflip(out)
        if rng.random() < 0.8:
            out = color_jitter(out, rng)
        if rng.random() < 0.2:
            out = TF.rgb_to_grayscale(out, num_output_channels=3)
        if rng.random() < blur:
            # PIL's blur (as DINO's): torchvision's 9x9 conv costs ~30x more per crop.
            out = out.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.1, 2.0))))
        if rng.random() < solarize:
            out = TF.solarize(out, 128)
        return torch.from_numpy(np.asarray(out, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


def color_jitter(
    image: Image.Image,
    rng: np.random.Generator,
    brightness: float = 0.4,
    contrast: float = 0.4,
    saturation: float = 0.2,
    hue: float = 0.1,
) -> Image.Image:
    """torchvision's ColorJitter: the four adjustments in a random order."""
    import torchvision.transforms.functional as TF

    adjust = [
        (TF.adjust_brightness, rng.uniform(1 - brightness, 1 + brightness)),
        (TF.adjust_contrast, rng.uniform(1 - contrast, 1 + contrast)),
        (TF.adjust_saturation, rng.uniform(1 - saturation, 1 + saturation)),
        (TF.adjust_hue, rng.uniform(-hue, hue)),
    ]
    for i in rng.permutation(4):
        fn, factor = adjust[i]
        image = fn(image, float(factor))
    return image


def normalize(crops: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 [B, 3, H, W] -> ImageNet-normalised float [B, 3, H, W] on the same device."""
    mean = torch.tensor(IMAGENET_MEAN, device=crops.device, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=crops.device, dtype=torch.float32).view(1, 3, 1, 1)
    return ((crops.float() / 255.0 - mean) / std).to(dtype)


def resolve_blur(value: str | list[float] | tuple[float, ...]) -> tuple[float, float, float]:
    """'intended' | 'official' | [p_global1, p_global2, p_local] -> the three probabilities."""
    if isinstance(value, str):
        return BLUR_PROBABILITIES[value]
    return tuple(float(v) for v in value)  # type: ignore[return-value]
