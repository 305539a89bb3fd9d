"""Streaming a shard manifest into multi-crop samples, resumably.

Every (rank, DataLoader worker) pair is a *reader*. Each epoch the shards are
permuted with a seed shared by all readers and dealt out round-robin, so the
readers' shards never overlap; with fewer shards than readers, every reader
walks all shards and keeps every R-th sample instead. A reader streams its
shards with webdataset, passes the raw samples through a shuffle buffer, and
only then decodes and augments them. The stream never ends: training stops by
iteration count.

Each sample carries its reader's state (epoch, position = buffer outputs
consumed in the epoch, corrupt samples and bad shards so far). A resumed
reader replays its epoch up to that position without decoding, so the stream
continues exactly; corrupt images are skipped and counted; a missing or
checksum-failing shard raises :class:`ManifestError` or is skipped and
counted (``on_bad_shard``).
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from curation.errors import ManifestError
from curation.manifest import Manifest, ShardEntry

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
STATE_FIELDS = ("reader", "epoch", "position", "corrupt", "bad_shards")
BAD_SHARD = object()


@dataclass
class ReaderState:
    epoch: int = 0
    position: int = 0
    corrupt: int = 0
    bad_shards: int = 0

    def vector(self, reader: int) -> torch.Tensor:
        return torch.tensor([reader, self.epoch, self.position, self.corrupt, self.bad_shards], dtype=torch.int64)


def reader_shards(num_shards: int, reader: int, num_readers: int, epoch: int, seed: int) -> tuple[np.ndarray, int]:
    """Shard indices a reader walks in an epoch, and the sample stride it keeps.

    With at least as many shards as readers: a disjoint round-robin slice of
    the epoch's permutation, every sample kept (stride 1). Otherwise all
    shards, keeping samples ``i % num_readers == reader`` (stride num_readers).
    """
    order = np.random.default_rng([seed, 1, epoch]).permutation(num_shards)
    if num_shards >= num_readers:
        return order[reader::num_readers], 1
    return order, num_readers


def shuffled(items: Iterator[Any], size: int, rng: np.random.Generator) -> Iterator[Any]:
    """Shuffle a stream through a buffer of ``size`` items (size <= 1: unchanged)."""
    buffer: list[Any] = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        j = int(rng.integers(0, size))
        yield buffer[j]
        buffer[j] = item
    for j in rng.permutation(len(buffer)):
        yield buffer[j]


def decode_image(sample: dict[str, Any]):
    """The RGB PIL image of a raw webdataset sample, or None if it has none or is corrupt."""
    from PIL import Image

    data = next((sample[ext] for ext in IMAGE_EXTENSIONS if ext in sample), None)
    if data is None:
        return None
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
        return image.convert("RGB")
    except Exception:  # any decoder failure makes a corrupt sample, never a crash
        return None


class ManifestDataset(IterableDataset):
    """Infinite stream of augmented samples from a manifest (see module docstring).

    transform: ``(PIL image, numpy Generator) -> dict of crops``. start: reader
    id -> ReaderState to resume from (readers absent start at epoch 0).
    """

    def __init__(
        self,
        manifest: Manifest,
        transform,
        *,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        shuffle_buffer: int = 1000,
        on_bad_shard: str = "error",
        verify_checksums: bool = False,
        start: dict[int, ReaderState] | None = None,
    ):
        if not manifest.shards:
            raise ManifestError(f"{manifest.location}: the manifest lists no shards")
        self.manifest, self.urls = manifest, manifest.shard_urls()
        self.transform = transform
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.shuffle_buffer = shuffle_buffer
        self.on_bad_shard, self.verify_checksums = on_bad_shard, verify_checksums
        self.start = start or {}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info else (1, 0)
        reader, num_readers = self.rank * workers + worker, self.world_size * workers
        start = self.start.get(reader, ReaderState())
        state = ReaderState(start.epoch, 0, start.corrupt, start.bad_shards)
        while True:
            replay = start.position if state.epoch == start.epoch else 0
            produced = 0
            raw = self._epoch_samples(reader, num_readers, state.epoch)
            buffer_rng = np.random.default_rng([self.seed, 2, state.epoch, reader])
            for sample in shuffled(raw, self.shuffle_buffer, buffer_rng):
                state.position += 1
                if state.position <= replay:
                    continue  # already trained on: skip without decoding
                if sample is BAD_SHARD:
                    state.bad_shards += 1
                    continue
                image = decode_image(sample)
                if image is None:
                    state.corrupt += 1
                    continue
                produced += 1
                rng = np.random.default_rng([self.seed, 3, state.epoch, reader, state.position])
                yield {**self.transform(image, rng), "key": sample["__key__"], "state": state.vector(reader)}
            if produced == 0 and replay == 0:
                raise ManifestError(
                    f"{self.manifest.location}: reader {reader} of {num_readers} found no readable "
                    f"image in epoch {state.epoch} ({state.corrupt} corrupt samples, "
                    f"{state.bad_shards} bad shards so far)"
                )
            state = ReaderState(state.epoch + 1, 0, state.corrupt, state.bad_shards)

    def _epoch_samples(self, reader: int, num_readers: int, epoch: int) -> Iterator[Any]:
        """Raw samples of the reader's shards in an epoch; BAD_SHARD marks a skipped shard
        (it goes through the shuffle buffer like a sample, so replays count it once)."""
        shards, stride = reader_shards(len(self.urls), reader, num_readers, epoch, self.seed)
        index = 0
        for shard in shards:
            try:
                for sample in self._shard_samples(int(shard)):
                    if index % stride == reader % stride:
                        yield sample
                    index += 1
            except (OSError, EOFError, tarfile.TarError, ValueError, ManifestError) as err:
                if self.on_bad_shard == "error":
                    raise ManifestError(f"shard {self.urls[shard]}: {err}") from None
                if stride == 1 or reader == 0:  # with shared shards, one reader counts
                    yield BAD_SHARD

    def _shard_samples(self, shard: int) -> Iterator[dict]:
        """Raw samples (``__key__`` + image bytes) of one shard, via webdataset."""
        import fsspec
        import webdataset as wds

        url, entry = self.urls[shard], self.manifest.shards[shard]
        with fsspec.open(url, "rb") as stream:
            source = io.BytesIO(_verified_bytes(stream, entry)) if self.verify_checksums else stream
            files = wds.tariterators.tar_file_expander([{"stream": source, "url": url}], select_files=_is_image)
            yield from wds.tariterators.group_by_keys(files)


def _is_image(name: str) -> bool:
    return name.rpartition(".")[2].lower() in IMAGE_EXTENSIONS


def _verified_bytes(stream, entry: ShardEntry) -> bytes:
    """The whole shard, after checking its size and sha256 against the manifest."""
    data = stream.read()
    if len(data) != entry.bytes:
        raise ManifestError(f"{len(data)} bytes, the manifest says {entry.bytes}")
    if hashlib.sha256(data).hexdigest() != entry.sha256:
        raise ManifestError("sha256 does not match the manifest")
    return data
