"""Near-duplicate pairs of binary codes: exact against brute force, without all pairs."""

from __future__ import annotations

import numpy as np
import pytest

from curation.algorithms import hamming


def _planted_codes(n: int, nbytes: int, radius: int, seed: int = 0) -> np.ndarray:
    """Random codes plus copies of the first n//4 with 0..radius+2 flipped bits."""
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 256, (n, nbytes), dtype=np.uint8)
    bits = np.unpackbits(codes[: n // 4], axis=1)
    for row in bits:
        row[rng.choice(nbytes * 8, size=rng.integers(0, radius + 3), replace=False)] ^= 1
    return np.vstack([codes, np.packbits(bits, axis=1)])


def _brute_force(codes: np.ndarray, radius: int) -> set[tuple[int, int]]:
    popcount = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).sum(1)
    dist = popcount[codes[:, None, :] ^ codes[None, :, :]].sum(-1)
    i, j = np.nonzero(np.triu(dist <= radius, 1))
    return set(zip(i.tolist(), j.tolist(), strict=False))


def _pairs(codes, radius, method, chunk=1 << 18) -> set[tuple[int, int]]:
    out = set()
    for i, j, d in hamming.near_pairs(codes, radius, method, chunk=chunk):
        assert (d == hamming.hamming(codes[i], codes[j])).all() and (d <= radius).all()
        out |= set(zip(i.tolist(), j.tolist(), strict=False))
    return out


@pytest.mark.parametrize("nbytes,radius", [(8, 0), (8, 4), (8, 7), (16, 6)])
@pytest.mark.parametrize("method", ["flat", "multihash"])
def test_pairs_equal_brute_force(nbytes, radius, method):
    codes = _planted_codes(800, nbytes, radius, seed=radius)
    expected = _brute_force(codes, radius)
    assert len(expected) >= 30  # planted copies within the radius
    assert _pairs(codes, radius, method, chunk=500) == expected


def test_radius_is_inclusive():
    base = np.zeros((1, 8), np.uint8)
    one = base.copy()
    one[0, 0] = 0b1111  # distance 4
    codes = np.vstack([base, one])
    assert _pairs(codes, 4, "flat") == {(0, 1)}
    assert _pairs(codes, 3, "flat") == set()
    assert _pairs(codes, 4, "multihash") == {(0, 1)}


def test_identical_codes_form_pairs_once_and_tiny_inputs():
    codes = np.zeros((3, 8), np.uint8)
    assert _pairs(codes, 0, "auto") == {(0, 1), (0, 2), (1, 2)}
    assert list(hamming.near_pairs(codes[:1], 4)) == []
    assert list(hamming.near_pairs(codes[:0], 4)) == []


def test_hamming_distance_rows():
    a = np.array([[0xFF, 0x00], [0x0F, 0xF0]], np.uint8)
    b = np.array([[0x00, 0x00], [0x0F, 0xF1]], np.uint8)
    assert hamming.hamming(a, b).tolist() == [8, 1]


@pytest.mark.parametrize("method", ["flat", "multihash"])
def test_variant_queries_are_exact_and_never_self_pairs(method):
    rng = np.random.default_rng(3)
    codes = _planted_codes(400, 8, 5, seed=3)
    # Two variant codes per image: noisy versions of random other images, or of itself.
    owners = np.repeat(np.arange(len(codes)), 2)
    targets = np.where(rng.random(len(owners)) < 0.5, owners, rng.integers(0, len(codes), len(owners)))
    bits = np.unpackbits(codes[targets], axis=1)
    for row in bits:
        row[rng.choice(64, size=rng.integers(0, 8), replace=False)] ^= 1
    queries = np.packbits(bits, axis=1)
    index = hamming.build_index(codes, 5, method)
    i, j, d = hamming.variant_pairs(index, queries, owners, 5)
    popcount = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).sum(1)
    dist = popcount[queries[:, None, :] ^ codes[None, :, :]].sum(-1)
    q, jj = np.nonzero(dist <= 5)
    keep = owners[q] != jj
    assert sorted(zip(i.tolist(), j.tolist(), d.tolist(), strict=False)) == sorted(
        zip(owners[q][keep].tolist(), jj[keep].tolist(), dist[q, jj][keep].tolist(), strict=False)
    )
    assert (i != j).all()
