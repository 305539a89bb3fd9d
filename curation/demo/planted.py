"""A planted copy-detection corpus with ground truth, for measuring dedup quality.

Distinct images are tiles of the demo's sample photographs (a 3x3 grid per
photograph, jittered, so that neighbouring tiles overlap by at most ~15% of
a side): tiles of one photograph are the hard negatives, alike in colour and
texture but different images. Each distinct image ("original") gets planted
copies under the usual copy-detection transforms (:data:`TRANSFORMS`),
cycling through them. Ground truth: every image has a ``group`` (the index of
its original); two images are copies of each other exactly when their groups
are equal.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageOps

from curation.demo.corpus import base_photos, jpeg

TRANSFORMS = ("reencode", "resize", "crop_small", "crop_20", "mirror", "rotate", "pad", "colour", "overlay")
GRID = 3


@dataclass
class Planted:
    """``names``, ``data`` (JPEG bytes), ``group`` and ``transform`` (``original`` or one of
    :data:`TRANSFORMS`) per image, in corpus order."""

    names: list[str] = field(default_factory=list)
    data: list[bytes] = field(default_factory=list)
    group: list[int] = field(default_factory=list)
    transform: list[str] = field(default_factory=list)

    def add(self, name: str, data: bytes, group: int, transform: str) -> None:
        self.names.append(name)
        self.data.append(data)
        self.group.append(group)
        self.transform.append(transform)


def tiles(photo: Image.Image, rng: np.random.Generator, grid: int = GRID) -> list[Image.Image]:
    """``grid x grid`` jittered tiles of a photograph, each resized to a 256-480 px short side."""
    w, h = photo.size
    tw, th = w / grid, h / grid
    out = []
    for row in range(grid):
        for col in range(grid):
            # Each tile is 1.1x a grid cell, shifted by up to 5% of a cell: neighbours share <= ~15% of a side.
            x0 = col * tw - 0.05 * tw + rng.uniform(-0.05, 0.05) * tw
            y0 = row * th - 0.05 * th + rng.uniform(-0.05, 0.05) * th
            box = np.clip([x0, y0, x0 + 1.1 * tw, y0 + 1.1 * th], 0, [w, h, w, h]).astype(int)
            tile = photo.crop(tuple(box))
            short = int(rng.integers(256, 480))
            scale = short / min(tile.size)
            out.append(tile.resize((round(tile.width * scale), round(tile.height * scale)), Image.Resampling.LANCZOS))
    return out


def planted_copy(img: Image.Image, kind: str, rng: np.random.Generator) -> tuple[Image.Image, int]:
    """A copy of ``img`` under ``kind`` and the JPEG quality to store it at."""
    w, h = img.size
    if kind == "reencode":
        return img, int(rng.integers(30, 50))
    if kind == "resize":
        s = rng.uniform(0.4, 0.7)
        return img.resize((round(w * s), round(h * s)), Image.Resampling.BILINEAR), 85
    if kind in ("crop_small", "crop_20"):
        keep = rng.uniform(0.9, 0.96) if kind == "crop_small" else 0.8
        cw, ch = round(w * keep), round(h * keep)
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        return img.crop((x, y, x + cw, y + ch)), 85
    if kind == "mirror":
        return ImageOps.mirror(img), 85
    if kind == "rotate":
        angle = float(rng.choice([-1, 1]) * rng.uniform(4, 10))
        return img.rotate(angle, Image.Resampling.BILINEAR, expand=False), 85
    if kind == "pad":
        sides = (rng.uniform(0, 0.12, 4) * [w, h, w, h]).astype(int)
        colour = tuple(int(c) for c in rng.choice([0, 255]) * np.ones(3))
        return ImageOps.expand(img, border=tuple(sides), fill=colour), 85
    if kind == "colour":
        img = ImageEnhance.Color(img).enhance(rng.uniform(0.4, 1.6))
        img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.8, 1.2))
        return ImageEnhance.Contrast(img).enhance(rng.uniform(0.8, 1.25)), 85
    if kind == "overlay":
        return _overlay(img, rng), 85
    raise ValueError(f"unknown transform '{kind}' ({', '.join(TRANSFORMS)})")


def _overlay(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A caption and a small logo box drawn over the image."""
    img = img.copy()
    w, h = img.size
    draw = ImageDraw.Draw(img)
    y = int(h * rng.uniform(0.75, 0.88))
    draw.text((int(w * 0.05), y), "copyright 2024 example.com", fill=(255, 255, 255))
    side = int(min(w, h) * 0.15)
    x0, y0 = int(rng.integers(0, w - side)), int(rng.integers(0, h // 4))
    colour = tuple(int(c) for c in rng.integers(0, 255, 3))
    draw.rectangle((x0, y0, x0 + side, y0 + side // 2), fill=colour)
    return img


def build(copies_per_original: int = 2, seed: int = 0, photos: dict[str, Image.Image] | None = None) -> Planted:
    """Originals (tiles of every photograph) and their copies, transforms in rotation."""
    rng = np.random.default_rng(seed)
    photos = base_photos() if photos is None else photos
    out = Planted()
    originals = [(f"{name}-{i}", tile) for name, photo in photos.items() for i, tile in enumerate(tiles(photo, rng))]
    for g, (name, tile) in enumerate(originals):
        out.add(f"{name}.jpg", jpeg(tile, 90), g, "original")
    for c in range(copies_per_original):
        for g, (name, tile) in enumerate(originals):
            kind = TRANSFORMS[(g * copies_per_original + c) % len(TRANSFORMS)]
            copy, quality = planted_copy(tile, kind, rng)
            out.add(f"{name}-{kind}.jpg", jpeg(copy, quality), g, kind)
    return out


def score(group: np.ndarray, kept: np.ndarray, transform: list[str]) -> dict:
    """Precision and recall of a dedup decision against the ground truth.

    ``group`` (n,): truth group per image; ``kept`` (n,): the index of the image
    each image's dedup group keeps (itself when kept). A dropped image is a
    correct drop when its kept image is in its truth group (precision); a
    planted copy is found when it and its original end with the same kept image
    (recall, also per transform). ``distinct_lost``: truth groups left without
    any kept member.
    """
    group, kept = np.asarray(group), np.asarray(kept)
    n = len(group)
    dropped = kept != np.arange(n)
    correct = dropped & (group[kept] == group)
    original = {int(g): i for i, (g, t) in enumerate(zip(group, transform, strict=False)) if t == "original"}
    per: dict[str, list[int]] = {}
    for i, t in enumerate(transform):
        if t != "original":
            found = kept[i] == kept[original[int(group[i])]]
            per.setdefault(t, [0, 0])[0] += int(found)
            per[t][1] += 1
    survivors = set(group[~dropped].tolist())
    found_all = sum(v[0] for v in per.values())
    planted = sum(v[1] for v in per.values())
    return {
        "precision": float(correct.sum() / max(1, dropped.sum())),
        "recall": float(found_all / max(1, planted)),
        "dropped": int(dropped.sum()),
        "wrong_drops": int((dropped & ~correct).sum()),
        "distinct_lost": int(len(set(group.tolist())) - len(survivors)),
        "per_transform": {
            t: round(v[0] / v[1], 3) for t, v in sorted(per.items(), key=lambda kv: TRANSFORMS.index(kv[0]))
        },
    }
