"""Curated and benchmark image sets: image folders, tar shards or URL lists.

Query sets for retrieval and benchmark sets for relative dedup are named in
config as :class:`ImageSetConfig` and read with :func:`iter_images`, which
yields ``(key, image_bytes, meta)`` in a deterministic order. Keys are
``<name>-<index>``: free of dots, so that they are valid webdataset keys.
"""

from __future__ import annotations

import functools
import glob
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from pydantic import Field

from curation.errors import ConfigError
from curation.section import Section

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


class ImageSetConfig(Section):
    name: str = Field(..., pattern=r"^[A-Za-z0-9_]+$", description="dataset name (letters, digits, _)")
    kind: Literal["folder", "shards", "urls"] = Field(
        "folder", description="folder: image files (class-per-folder allowed); shards: tar glob; urls: URL list"
    )
    path: str = Field(..., description="folder, tar glob (data/*.tar) or URL-list file")
    url_column: str = Field("url", description="URL column of a urls list")
    limit: int | None = Field(None, ge=1, description="read at most this many images (null: all)")
    size: int | None = Field(None, ge=0, description="number of images, for planning only (null: count them)")
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


def iter_images(cfg: ImageSetConfig, start: int = 0, stop: int | None = None) -> Iterator[tuple[str, bytes, dict]]:
    """Images ``start..stop`` of the set (keys keep their index in the whole set).

    Folders and shards skip the images before ``start`` without reading
    them, so a partition of a large set reads only its own images.
    """
    readers = {"folder": _iter_folder, "shards": _iter_shards, "urls": _iter_urls}
    stop = cfg.limit if stop is None else min(stop, cfg.limit or stop)
    for i, (data, meta) in enumerate(readers[cfg.kind](cfg, start), start):
        if stop is not None and i >= stop:
            return
        yield f"{cfg.name}-{i:08d}", data, meta


def count_images(cfg: ImageSetConfig) -> int | None:
    """Images in the set (after ``limit``), without reading them; None for URL lists."""
    if cfg.kind == "urls":
        return None
    n = len(folder_files(cfg.path)) if cfg.kind == "folder" else sum(1 for _ in _shard_members(cfg))
    return n if cfg.limit is None else min(n, cfg.limit)


@functools.lru_cache(maxsize=4)
def folder_files(path: str) -> list[Path]:
    """Image files under ``path``, sorted; listed once per process (partitions of a set share it)."""
    root = Path(path)
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _iter_folder(cfg: ImageSetConfig, start: int = 0) -> Iterator[tuple[bytes, dict]]:
    root = Path(cfg.path)
    for path in folder_files(cfg.path)[start:]:
        rel = path.relative_to(root)
        # Class-per-folder layouts (ImageNet style) give the label.
        label = rel.parts[0] if len(rel.parts) > 1 else None
        yield path.read_bytes(), {"path": rel.as_posix(), "label": label}


def _shard_members(cfg: ImageSetConfig) -> Iterator[tuple[str, tarfile.TarFile, tarfile.TarInfo]]:
    """Image members of the set's tar shards, in order (headers only)."""
    for shard in sorted(glob.glob(cfg.path)):
        with tarfile.open(shard, "r:*") as tar:
            for member in tar:
                _, _, ext = member.name.partition(".")
                if member.isfile() and f".{ext.lower()}" in IMAGE_SUFFIXES:
                    yield shard, tar, member


def _iter_shards(cfg: ImageSetConfig, start: int = 0) -> Iterator[tuple[bytes, dict]]:
    for i, (shard, tar, member) in enumerate(_shard_members(cfg)):
        if i < start:
            continue
        stem = member.name.partition(".")[0]
        file = tar.extractfile(member)
        assert file is not None  # image members are regular files
        data = file.read()
        yield data, {"path": f"{Path(shard).name}/{member.name}", "label": None, "source_key": stem}


def _iter_urls(cfg: ImageSetConfig, start: int = 0) -> Iterator[tuple[bytes, dict]]:
    from itertools import islice

    from curation.download.client import fetch_images
    from curation.download.config import UrlConfig

    policy = UrlConfig(allowed_addresses=cfg.allowed_addresses)
    for url, data in islice(fetch_images(cfg.path, cfg.url_column, urls=policy), start, None):
        yield data, {"path": url, "label": None}
