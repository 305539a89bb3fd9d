"""Thumbnails of the report, read through the run's own image stores.

Pool images come from the download stage's tar shards (one seek per image,
:mod:`curation.imagestore`); curated query images from their image set
(folder files, tar shards) or, failing that, from the run's output shards;
benchmark images from their folder. Each shown image is decoded once,
downscaled and re-encoded as a small JPEG: the report embeds our own
re-encoding, never bytes as a remote server sent them.
"""

from __future__ import annotations

import base64
import glob
import io
from pathlib import Path
from typing import Any

from curation.imagestore import TarImages, pool_tar
from curation.layout import step_dir
from curation.preprocess import DecodeError, open_rgb
from curation.sources import ImageSetConfig, folder_files
from curation.tables import key_partition

THUMB_SIDE = 112
JPEG_QUALITY = 80


def thumbnail_uri(data: bytes | None, side: int = THUMB_SIDE) -> str | None:
    """A ``data:image/jpeg;base64,...`` URI of the image bounded by ``side`` pixels; None if it does not decode."""
    try:
        image = open_rgb(data, draft_size=side)
    except DecodeError:
        return None
    image.thumbnail((side, side))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=JPEG_QUALITY)
    return "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode("ascii")


class Thumbnails:
    """Thumbnail URIs by sample key, cached; counts what it decoded."""

    def __init__(self, run_dir: Path, image_sets: dict[str, ImageSetConfig]):
        self.run_dir = Path(run_dir)
        self.image_sets = image_sets
        self.decoded = 0
        self._cache: dict[tuple[str, str], str | None] = {}
        self._tars: dict[Path, TarImages] = {}
        self._curated_paths: dict[str, dict[str, str]] = {}
        self._output: dict[str, str] | None = None
        self._folders: dict[str, list[Path]] = {}

    def pool(self, key: str) -> str | None:
        return self._memo("pool", key, lambda: self._tar_get(pool_tar(self.run_dir, key_partition(key)), key))

    def curated(self, image_set: str, key: str) -> str | None:
        return self._memo(image_set, key, lambda: self._curated_bytes(image_set, key))

    def benchmark(self, hit: str) -> str | None:
        """``hit`` is ``<set name>:<set name>-<index>``, as the dedup table's ``benchmark_hit``."""
        name, _, key = hit.partition(":")
        return self._memo("benchmark", hit, lambda: self._set_image(name, key))

    def _memo(self, space: str, key: str, read) -> str | None:
        slot = (space, key)
        if slot not in self._cache:
            data = read()
            self._cache[slot] = thumbnail_uri(data) if data else None
            self.decoded += data is not None
        return self._cache[slot]

    def _tar(self, path: Path) -> TarImages:
        if path not in self._tars:
            self._tars[path] = TarImages(path)
        return self._tars[path]

    def _tar_get(self, path: Path, key: str) -> bytes | None:
        images = self._tar(path)
        return images.get(key) if key in images else None

    def _curated_bytes(self, image_set: str, key: str) -> bytes | None:
        from curation.stages.shard import io as shard_io

        data = self._set_image(image_set, key)
        if data is None:  # e.g. a URL set: the copy written into the output shards
            shard = self._output_shards().get(key)
            data = self._tar_get(self.run_dir / shard_io.SHARDS_DIR / shard, key) if shard else None
        return data

    def _set_image(self, name: str, key: str) -> bytes | None:
        """The image ``<name>-<index>`` of a folder or shard image set, in :func:`iter_images` order."""
        cfg = self.image_sets.get(name)
        if cfg is None or not key.startswith(f"{name}-"):
            return None
        path = self._curated_path(name, key)
        if cfg.kind == "folder":
            if path is not None:
                file: Path | None = Path(cfg.path) / path
            else:
                files = self._folders.setdefault(name, folder_files(Path(cfg.path)))
                index = int(key.rsplit("-", 1)[1])
                file = files[index] if index < len(files) else None
            return file.read_bytes() if file is not None and file.is_file() else None
        if cfg.kind == "shards" and path is not None:
            shard_name, _, member = path.partition("/")
            shard = next((Path(s) for s in glob.glob(cfg.path) if Path(s).name == shard_name), None)
            return self._tar_get(shard, member.rsplit(".", 1)[0]) if shard else None
        return None

    def _curated_path(self, name: str, key: str) -> str | None:
        """The image's ``path`` as the embed stage recorded it (None when the set was not embedded)."""
        if name not in self._curated_paths:
            from curation import tables

            table = step_dir(self.run_dir, "embed", "curated") / f"{name}.parquet"
            paths: dict[str, Any] = {}
            if table.exists():
                t = tables.read_parquet(table, ["key", "path"])
                paths = dict(zip(t.column("key").to_pylist(), t.column("path").to_pylist(), strict=False))
            self._curated_paths[name] = paths
        return self._curated_paths[name].get(key)

    def _output_shards(self) -> dict[str, str]:
        if self._output is None:
            from curation import tables
            from curation.stages.shard import io as shard_io

            samples = step_dir(self.run_dir, "shard", "plan") / shard_io.SAMPLES_FILE
            self._output = {}
            if samples.exists():
                t = tables.read_parquet(samples, ["key", "shard"])
                pairs = zip(t.column("key").to_pylist(), t.column("shard").to_pylist(), strict=True)
                self._output = {k: s for k, s in pairs if s}
        return self._output
