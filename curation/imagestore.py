"""Random access to the images of a tar shard by sample key.

The download stage stores a partition's images as ``{key}.jpg`` (+
``{key}.json``) members of one tar. Later stages read them by key; the index
of member offsets is built once per shard, then each read is one seek.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Iterator

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")


class TarImages:
    """Image bytes of a tar shard, by key. Only plain files are indexed."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self._images: dict[str, tuple[int, int]] = {}
        self._meta: dict[str, tuple[int, int]] = {}
        if self.path.exists():
            self._index()

    def _index(self) -> None:
        with tarfile.open(self.path, "r:") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                key, _, ext = member.name.rpartition(".")
                slot = (member.offset_data, member.size)
                if ext.lower() in IMAGE_EXTENSIONS:
                    self._images[key] = slot
                elif ext == "json":
                    self._meta[key] = slot

    def __len__(self) -> int:
        return len(self._images)

    def __contains__(self, key: str) -> bool:
        return key in self._images

    def keys(self) -> list[str]:
        return list(self._images)

    def get(self, key: str) -> bytes:
        return self._read(self._images[key])

    def meta(self, key: str) -> dict:
        return json.loads(self._read(self._meta[key])) if key in self._meta else {}

    def items(self) -> Iterator[tuple[str, bytes]]:
        with open(self.path, "rb") as f:
            for key, (offset, size) in self._images.items():
                f.seek(offset)
                yield key, f.read(size)

    def _read(self, slot: tuple[int, int]) -> bytes:
        offset, size = slot
        with open(self.path, "rb") as f:
            f.seek(offset)
            return f.read(size)


def pool_tar(run_dir: Path, partition: int) -> Path:
    """The tar of the download stage's images of one partition."""
    from curation.stages.base import partition_path

    return partition_path(Path(run_dir) / "stages" / "download" / "fetch", partition, "tar")


def pool_images(run_dir: Path, partition: int) -> TarImages:
    """The download stage's images of one partition.

    A tar that the partition's marker lists must be there with its size: a
    missing or torn tar is a partition error naming the file, never a
    partition of missing images (a partition without any image has no tar,
    and its marker lists none). The driver checks this before a run starts;
    this catches a file lost while it runs.
    """
    from curation.atomic import read_json
    from curation.errors import PartitionError
    from curation.runner.verify import file_problems, in_step, marker_path

    tar = pool_tar(run_dir, partition)
    step_dir = Path(run_dir) / "stages" / "download" / "fetch"
    marker = marker_path(step_dir, partition)
    try:
        listed = read_json(marker).get("files", {})
    except (OSError, ValueError):
        listed = {}  # outputs made by other means than this runner: taken as they are
    problems = file_problems(in_step(step_dir), {tar.name: listed[tar.name]}) if tar.name in listed else []
    if problems:
        raise PartitionError(f"{problems[0]}: rerun the download stage to redo partition {partition}")
    return TarImages(tar)
