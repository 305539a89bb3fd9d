import shutil

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from curation.errors import ManifestError
from curation.manifest import read_manifest
from curation.train.data.augmentations import MultiCrop
from curation.train.data.manifest_dataset import ManifestDataset, ReaderState, reader_shards, shuffled

CROPS = MultiCrop(global_size=16, local_size=8, num_local=1)
GOOD_KEYS = {f"s{s}-{i}" for s in range(6) for i in range(8)} - {"s1-2", "s1-5"}


def _dataset(shards_dir, **kwargs):
    kwargs.setdefault("shuffle_buffer", 4)
    return ManifestDataset(read_manifest(shards_dir / "manifest.json"), CROPS, **kwargs)


def _epoch(samples, num_readers, epoch=0):
    """(reader, key) pairs of one epoch from an interleaved per-sample stream."""
    seen, done = [], set()
    for sample in samples:
        reader, sample_epoch = int(sample["state"][0]), int(sample["state"][1])
        if sample_epoch > epoch:
            done.add(reader)
            if len(done) == num_readers:
                break
            continue
        if sample_epoch == epoch:
            seen.append((reader, sample["key"]))
    return seen


def test_reader_shards_disjoint_and_complete():
    for readers in (1, 2, 4, 6):
        parts = [reader_shards(6, r, readers, epoch=3, seed=0) for r in range(readers)]
        assert all(stride == 1 for _, stride in parts)
        flat = np.concatenate([p for p, _ in parts])
        assert sorted(flat.tolist()) == list(range(6))
    assert reader_shards(6, 2, 8, 0, 0)[1] == 8  # fewer shards than readers: sample stride
    assert not np.array_equal(reader_shards(6, 0, 1, 0, 0)[0], reader_shards(6, 0, 1, 1, 0)[0])


def test_shuffled_is_a_permutation():
    out = list(shuffled(iter(range(50)), 8, np.random.default_rng(0)))
    assert sorted(out) == list(range(50)) and out != list(range(50))


def test_ranks_and_workers_split_without_overlap(shards_dir):
    seen = []
    for rank in range(2):
        ds = _dataset(shards_dir, rank=rank, world_size=2)
        loader = DataLoader(ds, batch_size=None, num_workers=2)
        seen += _epoch(loader, num_readers=2)
    keys = [k for _, k in seen]
    assert len(keys) == len(set(keys)) and set(keys) == GOOD_KEYS
    assert {r for r, _ in seen} == {0, 1, 2, 3}


def test_more_readers_than_shards_split_by_sample(shards_dir):
    seen = []
    for rank in range(8):
        seen += _epoch(iter(_dataset(shards_dir, rank=rank, world_size=8)), num_readers=1)
    keys = [k for _, k in seen]
    assert len(keys) == len(set(keys)) and set(keys) == GOOD_KEYS


def test_corrupt_samples_are_skipped_and_counted(shards_dir):
    samples = iter(_dataset(shards_dir))
    first = [next(samples) for _ in range(len(GOOD_KEYS) + 1)]
    assert int(first[-1]["state"][1]) == 1  # one epoch of the 46 good samples, then epoch 1
    assert int(first[-2]["state"][3]) == 2  # corrupt counter
    assert int(first[-2]["state"][2]) == 48  # positions count corrupt samples too


def test_resume_replays_the_same_stream(shards_dir):
    stream = iter(_dataset(shards_dir, seed=3))
    reference = [next(stream) for _ in range(60)]  # crosses into epoch 1
    cut = reference[49]["state"]
    start = {0: ReaderState(int(cut[1]), int(cut[2]), int(cut[3]), int(cut[4]))}
    resumed = iter(_dataset(shards_dir, seed=3, start=start))
    for expected in reference[50:]:
        got = next(resumed)
        assert got["key"] == expected["key"]
        assert torch.equal(got["state"], expected["state"])
        assert torch.equal(got["global"][1], expected["global"][1])


@pytest.fixture()
def broken_dir(shards_dir, tmp_path):
    copy = tmp_path / "broken"
    shutil.copytree(shards_dir, copy)
    return copy


def test_missing_shard_error_or_skip(broken_dir):
    (broken_dir / "shard-000003.tar").unlink()
    with pytest.raises(ManifestError, match="shard-000003"):
        for _ in _dataset(broken_dir, on_bad_shard="error"):
            pass
    seen = _epoch(iter(_dataset(broken_dir, on_bad_shard="skip")), num_readers=1)
    assert {k for _, k in seen} == {k for k in GOOD_KEYS if not k.startswith("s3-")}
    samples = iter(_dataset(broken_dir, on_bad_shard="skip"))
    last = [next(samples) for _ in range(40)][-1]
    assert int(last["state"][4]) == 1  # bad shards counted once


def test_checksum_mismatch(broken_dir):
    path = broken_dir / "shard-000002.tar"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # in the tar padding: still a readable tar, wrong sha256
    path.write_bytes(bytes(data))
    with pytest.raises(ManifestError, match="sha256"):
        for _ in _dataset(broken_dir, verify_checksums=True):
            pass
    seen = _epoch(iter(_dataset(broken_dir, verify_checksums=True, on_bad_shard="skip")), num_readers=1)
    assert not any(k.startswith("s2-") for _, k in seen)
    unverified = _epoch(iter(_dataset(broken_dir)), num_readers=1)
    assert len(unverified) == len(GOOD_KEYS)
