"""Curated and benchmark image sets: image folders, tar shards or URL lists.

Query sets for retrieval and benchmark sets for relative dedup are named in
config as :class:`ImageSetConfig` and read with :func:`iter_images`, which
yields ``(key, image_bytes, meta)`` in a deterministic order. Keys are
``<name>-<index>``: free of dots, so that they are valid webdataset keys.
"""

from __future__ import annotations

import glob
import tarfile
from pathlib import Path
from typing import Iterator, Literal

from pydantic import Field

from curation.config import Section
from curation.errors import ConfigError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


class ImageSetConfig(Section):
    name: str = Field(..., pattern=r"^[A-Za-z0-9_]+$", description="dataset name (letters, digits, _)")
    kind: Literal["folder", "shards", "urls"] = Field(
        "folder", description="folder: image files (class-per-folder allowed); shards: tar glob; urls: URL list"
    )
    path: str = Field(..., description="folder, tar glob (data/*.tar) or URL-list file")
    url_column: str = Field("url", description="URL column of a urls list")
    limit: int | None = Field(None, ge=1, description="read at most this many images (null: all)")
    size: int | None = Field(
        None, ge=0, description="number of images, for planning only (null: count them)"
    )
    allowed_addresses: list[str] = Field(
        default_factory=list,
        description="urls: non-public IPs or networks allowed anyway, e.g. ['127.0.0.1'] (tests, demos)",
    )


def check_exists(cfg: ImageSetConfig, key: str) -> None:
    """Config-tier check: the set's path exists (ConfigError naming ``key``)."""
    if cfg.kind == "shards":
        if not sorted(glob.glob(cfg.path)):
            raise ConfigError(f"{key}.path: no tar shards match '{cfg.path}'")
    elif not Path(cfg.path).exists():
        raise ConfigError(f"{key}.path: '{cfg.path}' does not exist")


def iter_images(cfg: ImageSetConfig) -> Iterator[tuple[str, bytes, dict]]:
    readers = {"folder": _iter_folder, "shards": _iter_shards, "urls": _iter_urls}
    for i, (data, meta) in enumerate(readers[cfg.kind](cfg)):
        if cfg.limit is not None and i >= cfg.limit:
            return
        yield f"{cfg.name}-{i:08d}", data, meta


def folder_files(root: Path) -> list[Path]:
    """The image files of a folder set, in key order (``<name>-<index>`` is the index-th)."""
    return sorted(p for p in Path(root).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _iter_folder(cfg: ImageSetConfig) -> Iterator[tuple[bytes, dict]]:
    root = Path(cfg.path)
    for path in folder_files(root):
        rel = path.relative_to(root)
        # Class-per-folder layouts (ImageNet style) give the label.
        label = rel.parts[0] if len(rel.parts) > 1 else None
        yield path.read_bytes(), {"path": rel.as_posix(), "label": label}


def _iter_shards(cfg: ImageSetConfig) -> Iterator[tuple[bytes, dict]]:
    for shard in sorted(glob.glob(cfg.path)):
        with tarfile.open(shard, "r:*") as tar:
            for member in tar:
                stem, _, ext = member.name.partition(".")
                if member.isfile() and f".{ext.lower()}" in IMAGE_SUFFIXES:
                    data = tar.extractfile(member).read()
                    yield data, {"path": f"{Path(shard).name}/{member.name}", "label": None, "source_key": stem}


def _iter_urls(cfg: ImageSetConfig) -> Iterator[tuple[bytes, dict]]:
    from curation.download.client import fetch_images
    from curation.download.config import UrlConfig

    policy = UrlConfig(allowed_addresses=cfg.allowed_addresses)
    for url, data in fetch_images(cfg.path, cfg.url_column, urls=policy):
        yield data, {"path": url, "label": None}
