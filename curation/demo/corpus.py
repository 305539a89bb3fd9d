"""A small, real, offline corpus for the demo and the end-to-end tests.

Real photographs come from scikit-image's and scikit-learn's sample images
(and Debian's CC-BY wallpapers in /usr/share/backgrounds when installed);
distinct pool images are crops of them at several places and scales, plus
procedurally generated images. Planted on top: near-duplicates (re-encoded,
resized, cropped, flipped, colour-shifted copies), exact duplicates, a
duplicate URL, broken URLs, a small curated query set (class-per-folder) and
a benchmark set that leaks a few pool images. ``truth.json`` records it all.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageOps

SKIMAGE_PHOTOS = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "camera",
    "coins",
    "moon",
    "page",
    "text",
    "clock",
    "brick",
    "grass",
    "gravel",
    "retina",
)
WALLPAPERS = Path("/usr/share/backgrounds")
SIZES = {"tiny": (1, 12), "small": (3, 60)}  # crops per photo, generated images


@dataclass
class Corpus:
    root: Path
    urls: Path
    queries: Path
    benchmark: Path
    truth: dict


def base_photos() -> dict[str, Image.Image]:
    """Named RGB photographs from installed packages."""
    from skimage import data as skdata

    photos = {}
    for name in SKIMAGE_PHOTOS:
        array = getattr(skdata, name)()
        if array.ndim == 2:
            array = np.stack([array] * 3, axis=-1)
        photos[name] = Image.fromarray(np.asarray(array[..., :3], dtype=np.uint8))
    try:
        from sklearn.datasets import load_sample_images

        for fname, array in zip(("china", "flower"), load_sample_images().images, strict=False):
            photos[fname] = Image.fromarray(array)
    except ImportError:
        pass
    for path in sorted(WALLPAPERS.rglob("*.jpg"))[:8] if WALLPAPERS.exists() else []:
        photos[f"wall_{path.stem[:20]}"] = _open_small(path)
    return photos


def _open_small(path: Path) -> Image.Image:
    img = Image.open(path)
    img.draft("RGB", (1600, 1600))
    return img.convert("RGB")


def crops(photo: Image.Image, n: int, rng: np.random.Generator) -> list[Image.Image]:
    """``n`` crops of distinct regions of a photo, resized to 256-768 px."""
    w, h = photo.size
    out = []
    for i in range(n):
        side = int(min(w, h) * rng.uniform(0.45, 0.7))
        x = int((w - side) * (i + 0.5) / n) if n > 1 else (w - side) // 2
        y = int(rng.integers(0, max(1, h - side)))
        target = int(rng.integers(256, 768))
        out.append(photo.crop((x, y, x + side, y + side)).resize((target, int(target * rng.uniform(0.7, 1.0)))))
    return out


def generated(rng: np.random.Generator) -> Image.Image:
    """A procedural image: a colour gradient with random shapes."""
    w, h = int(rng.integers(300, 900)), int(rng.integers(300, 900))
    yy, xx = np.mgrid[0:h, 0:w]
    base = rng.uniform(0, 255, 3)
    slope = rng.uniform(-0.3, 0.3, (2, 3))
    array = np.clip(base + xx[..., None] * slope[0] + yy[..., None] * slope[1], 0, 255).astype(np.uint8)
    img = Image.fromarray(array)
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(3, 12))):
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        box = (x0, y0, x0 + int(rng.integers(20, w // 2)), y0 + int(rng.integers(20, h // 2)))
        colour = tuple(int(c) for c in rng.integers(0, 255, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    return img


def near_duplicate(img: Image.Image, kind: str) -> Image.Image:
    w, h = img.size
    if kind == "resized":
        return img.resize((max(32, w * 2 // 3), max(32, h * 2 // 3)))
    if kind == "cropped":
        return img.crop((w // 20, h // 20, w - w // 20, h - h // 20))
    if kind == "flipped":
        return ImageOps.mirror(img)
    if kind == "colour":
        return ImageEnhance.Color(ImageEnhance.Brightness(img).enhance(1.1)).enhance(1.2)
    return img  # "reencoded": same pixels, other JPEG quality


NEAR_KINDS = ("reencoded", "resized", "cropped", "flipped", "colour")


def jpeg(img: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def build_corpus(root: Path, size: str = "small", seed: int = 0) -> Corpus:
    """Write the corpus under ``root``; the URL list needs :func:`write_urls`."""
    if size not in SIZES:
        from curation.errors import ConfigError

        raise ConfigError(f"size: expected one of {sorted(SIZES)}, got '{size}'")
    n_crops, n_generated = SIZES[size]
    rng = np.random.default_rng(seed)
    images_dir = root / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    photos = base_photos()
    pool: list[tuple[str, Image.Image, str]] = []  # file name, image, origin
    for name, photo in photos.items():
        for i, crop in enumerate(crops(photo, n_crops, rng)):
            pool.append((f"{name}-{i}.jpg", crop, name))
    for i in range(n_generated):
        pool.append((f"generated-{i:03d}.jpg", generated(rng), "generated"))
    files = {fname: jpeg(img) for fname, img, _ in pool}
    truth: dict[str, list[Any]] = {"near_duplicates": [], "exact_duplicates": [], "broken": [], "leaks": []}
    # Planted near-duplicates of every 4th original, cycling through the transforms.
    for j, (fname, img, _) in enumerate(pool[::4]):
        kind = NEAR_KINDS[j % len(NEAR_KINDS)]
        copy_name = f"near-{kind}-{fname}"
        files[copy_name] = jpeg(near_duplicate(img, kind), quality=70 if kind == "reencoded" else 90)
        truth["near_duplicates"].append({"original": fname, "copy": copy_name, "transform": kind})
    for fname, _, _ in pool[1:6]:
        copy_name = f"exact-{fname}"
        files[copy_name] = files[fname]
        truth["exact_duplicates"].append({"original": fname, "copy": copy_name})
    for fname, data in files.items():
        (images_dir / fname).write_bytes(data)
    queries = _write_queries(root / "queries", photos, rng)
    benchmark = _write_benchmark(root / "benchmark", pool[2::9][:4], truth)
    (root / "truth.json").write_text(json.dumps(truth, indent=1))
    return Corpus(root, root / "urls.parquet", queries, benchmark, truth)


def _write_queries(folder: Path, photos: dict[str, Image.Image], rng: np.random.Generator) -> Path:
    """A curated, class-per-folder query set: fresh crops of three photos."""
    for name in list(photos)[:3]:
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i, crop in enumerate(crops(photos[name], 5, rng)):
            (folder / name / f"{i}.jpg").write_bytes(jpeg(crop, quality=85))
    return folder


def _write_benchmark(folder: Path, leaked: list, truth: dict) -> Path:
    """A benchmark set whose images are re-encoded copies of pool images."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, (fname, img, _) in enumerate(leaked):
        (folder / f"bench-{i}.jpg").write_bytes(jpeg(img, quality=80))
        truth["leaks"].append({"pool": fname, "benchmark": f"bench-{i}.jpg"})
    return folder


def write_urls(corpus: Corpus, base_url: str) -> Path:
    """The URL list (Parquet: url, caption, id) pointing at a server's base URL."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = sorted(p.name for p in (corpus.root / "images").iterdir())
    urls = [f"{base_url}/images/{n}" for n in names]
    # A repeated URL and URLs that cannot succeed, so the demo shows those statuses.
    broken = [f"{base_url}/images/missing-{i}.jpg" for i in range(2)] + ["ftp://example.invalid/x.jpg"]
    urls += [urls[0]] + broken
    corpus.truth["broken"] = broken
    corpus.truth["duplicate_url"] = urls[0]
    captions = [u.rsplit("/", 1)[-1] for u in urls]
    table = pa.table({"url": urls, "caption": captions, "id": list(range(len(urls)))})
    pq.write_table(table, corpus.urls)
    (corpus.root / "truth.json").write_text(json.dumps(corpus.truth, indent=1))
    return corpus.urls
