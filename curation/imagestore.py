"""Random access to the images of a tar shard by sample key.

The download stage stores a partition's images as ``{key}.jpg`` (+
``{key}.json``) members of one tar. Later stages read them by key; the index
of member offsets is built once per shard, then each read is one seek.
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterator
from pathlib import Path

from curation.layout import IMAGES_STEP, partition_path, step_dir

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

    def image_slot(self, key: str) -> tuple[int, int] | None:
        """(offset, bytes) of a key's image data in the tar; None when absent."""
        return self._images.get(key)

    def meta_slot(self, key: str) -> tuple[int, int] | None:
        """(offset, bytes) of a key's JSON member in the tar; None when absent."""
        return self._meta.get(key)

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
    return partition_path(_fetch_dir(run_dir), partition, "tar")


def _fetch_dir(run_dir: Path) -> Path:
    return step_dir(run_dir, *IMAGES_STEP)


def pool_images(run_dir: Path, partition: int) -> TarImages:
    """The download stage's images of one partition.

    A tar that the partition's marker lists must be there with its size: a
    missing or torn tar is a partition error naming the file, never a
    partition of missing images (a partition without any image has no tar,
    and its marker lists none). The driver checks this before a run starts;
    this catches a file lost while it runs.
    """
    from curation.errors import PartitionError
    from curation.markers import listed_file_problems

    tar = pool_tar(run_dir, partition)
    problems = listed_file_problems(_fetch_dir(run_dir), partition, tar.name)
    if problems:
        raise PartitionError(f"{problems[0]}: rerun the download stage to redo partition {partition}")
    return TarImages(tar)
