"""Tiny webdataset shards + a manifest, built from scikit-image's sample photos."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from curation.manifest import shard_entry, write_manifest

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera", "coins")


def photos(size: int) -> list[Image.Image]:
    from skimage import data

    out = []
    for name in PHOTOS:
        array = getattr(data, name)()
        image = Image.fromarray(array).convert("RGB")
        out.append(image.resize((size, size), Image.BICUBIC))
    return out


def jpeg(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def build_shards(
    root: Path, num_shards: int, per_shard: int, size: int = 48, corrupt: tuple[str, ...] = (), seed: int = 0
) -> Path:
    """Writes ``root/shard-NNNNNN.tar`` with ``{key}.jpg`` + ``{key}.json`` and
    ``root/manifest.json``; keys ``s{shard}-{i}``. Keys in ``corrupt`` get
    bytes that are not an image. Returns the manifest path."""
    import webdataset as wds

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    base = photos(size * 2)
    entries = []
    for s in range(num_shards):
        path = root / f"shard-{s:06d}.tar"
        with wds.TarWriter(str(path)) as writer:
            for i in range(per_shard):
                key = f"s{s}-{i}"
                photo = base[(s * per_shard + i) % len(base)]
                x, y = rng.integers(0, size, 2)
                image = photo.crop((x, y, x + size, y + size))
                data = b"not an image" if key in corrupt else jpeg(image)
                writer.write({"__key__": key, "jpg": data, "json": {"key": key}})
        entries.append(shard_entry(path, root, per_shard))
    total = num_shards * per_shard
    write_manifest(root / "manifest.json", entries, {"photos": total}, "0123456789abcdef", "test")
    return root / "manifest.json"
