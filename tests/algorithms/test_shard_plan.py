"""The shard plan equals the sequential writer's rolling, sample for sample."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest

from curation.algorithms import shard_plan as sp


def _sequential(sizes, written, max_samples, max_bytes) -> list[int]:
    """The rolling of a writer that appends samples one by one (the rule the plan must reproduce)."""
    out, shard, count, size = [], -1, 0, 0
    for s, w in zip(sizes, written, strict=True):
        if not w:
            out.append(-1)
            continue
        if shard < 0 or count >= max_samples or size + s > max_bytes:
            shard, count, size = shard + 1, 0, 0
        count, size = count + 1, size + s
        out.append(shard)
    return out


@pytest.mark.parametrize(
    "seed,n,max_samples,max_bytes",
    [
        (0, 1000, 7, 10_000),
        (1, 5000, 100, 50_000),
        (2, 3000, 10_000, 3000),
        (3, 2000, 1, 10**9),
        (4, 0, 5, 10),
    ],
)
def test_assign_shards_equals_the_sequential_rolling(seed, n, max_samples, max_bytes):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 6000, n)  # some larger than max_bytes: a shard of their own
    written = rng.random(n) > 0.1
    got = sp.assign_shards(sizes, written, max_samples, max_bytes)
    assert got.tolist() == _sequential(sizes, written, max_samples, max_bytes)
    ids = got[written]
    assert (np.diff(ids) >= 0).all() and (ids[:1] == 0).all() and (np.diff(np.unique(ids)) == 1).all()
    for shard in np.unique(ids):
        members = sizes[got == shard]
        assert 1 <= len(members) <= max_samples
        assert len(members) == 1 or members.sum() <= max_bytes


def test_exact_fit_stays_and_one_byte_more_rolls():
    sizes = np.array([400, 600, 1, 1000])
    assert sp.assign_shards(sizes, np.ones(4, bool), 10, 1000).tolist() == [0, 0, 1, 2]
    assert sp.assign_shards(sizes, np.ones(4, bool), 2, 10**6).tolist() == [0, 0, 1, 1]


def test_unwritten_samples_take_no_room():
    sizes = np.array([500, 10**9, 500])
    assert sp.assign_shards(sizes, np.array([True, False, True]), 10, 1000).tolist() == [0, -1, 0]


@pytest.mark.parametrize("bad", [dict(max_samples=0, max_bytes=1), dict(max_samples=1, max_bytes=0)])
def test_limits_must_be_positive(bad):
    with pytest.raises(ValueError):
        sp.assign_shards(np.array([1]), np.array([True]), **bad)


def test_sample_bytes_are_the_tar_members_bytes():
    """Header block plus data padded to 512, per member: what a tar file of them adds up to."""
    out = io.BytesIO()
    lengths = [0, 1, 511, 512, 513, 4000]
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for i, n in enumerate(lengths):
            info = tarfile.TarInfo(f"{i:06d}.jpg")
            info.size = n
            tar.addfile(info, io.BytesIO(b"x" * n))
        body = tar.offset
    assert body == int(np.sum(sp.member_bytes(np.array(lengths))))
    assert sp.sample_bytes(np.array([1, 513]), np.array([10, 0])).tolist() == [2048, 2048]


def test_units_cover_every_shard_once():
    assert sp.shard_units(10, 4).tolist() == [0, 4, 8, 10]
    assert sp.shard_units(8, 4).tolist() == [0, 4, 8]
    assert sp.shard_units(0, 4).tolist() == [0]
    with pytest.raises(ValueError):
        sp.shard_units(3, 0)


def test_read_order_groups_by_source_then_offset():
    source = np.array([2, 0, 2, 1, 0])
    offset = np.array([50, 900, 10, 5, 100])
    order = sp.read_order(source, offset)
    assert order.tolist() == [4, 1, 3, 2, 0]
