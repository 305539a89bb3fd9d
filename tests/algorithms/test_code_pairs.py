"""Hamming pairs block by block: the union over workers equals brute force and the one-index search."""

from __future__ import annotations

import numpy as np
import pytest

from curation.algorithms import code_pairs, hamming
from curation.algorithms import components as cc
from tests.algorithms.test_hamming import _brute_force, _planted_codes


def _split(n: int, parts: int) -> np.ndarray:
    return np.linspace(0, n, parts + 1).astype(np.int64)


def _blocks(codes: np.ndarray, offsets: np.ndarray, first: int = 0) -> list[tuple[int, np.ndarray]]:
    return [(int(offsets[j]), codes[offsets[j] : offsets[j + 1]]) for j in range(first, len(offsets) - 1)]


def distributed_pairs(codes: np.ndarray, radius: int, parts: int, method: str = "auto") -> list:
    """What ``parts`` workers find: worker ``i`` searches its block against blocks ``j >= i``."""
    offsets = _split(len(codes), parts)
    found = []
    for i in range(parts):
        own = codes[offsets[i] : offsets[i + 1]]
        found += list(code_pairs.partition_pairs(own, int(offsets[i]), _blocks(codes, offsets, i), radius, method))
    return found


def _as_set(found) -> set[tuple[int, int]]:
    out: set[tuple[int, int]] = set()
    for a, b in found:
        assert (a < b).all()
        out |= set(zip(a.tolist(), b.tolist(), strict=True))
    return out


@pytest.mark.parametrize("parts", [1, 2, 4])
@pytest.mark.parametrize("method,nbytes,radius", [("flat", 8, 4), ("multihash", 8, 4), ("multihash", 16, 6)])
def test_blocks_equal_brute_force(parts, method, nbytes, radius):
    codes = _planted_codes(800, nbytes, radius, seed=parts)
    expected = _brute_force(codes, radius)
    assert len(expected) >= 30
    found = distributed_pairs(codes, radius, parts, method)
    total = sum(len(a) for a, _ in found)
    assert total == len(expected)  # each pair found by exactly one worker, once
    assert _as_set(found) == expected


def test_variant_queries_against_every_block_equal_one_index():
    rng = np.random.default_rng(3)
    codes = _planted_codes(600, 8, 4, seed=4)
    owners = rng.integers(0, len(codes), 900)
    variants = codes[owners].copy()
    flips = rng.integers(0, 64, (900, 3))
    bits = np.unpackbits(variants, axis=1)
    bits[np.arange(900)[:, None], flips] ^= 1
    variants = np.packbits(bits, axis=1)
    index = hamming.build_index(codes, 4, "multihash")
    i, j, _ = hamming.variant_pairs(index, variants, owners, 4)
    expected = set(zip(i.tolist(), j.tolist(), strict=True))
    assert len(expected) > 50
    for parts in (1, 2, 4):
        found = code_pairs.variant_block_pairs(variants, owners, _blocks(codes, _split(len(codes), parts)), 4)
        pairs = {(a, b) for u, v in found for a, b in zip(u.tolist(), v.tolist(), strict=True)}
        assert pairs == expected


def test_planted_components_over_200k_codes():
    """200k random 64-bit codes and 20k planted groups of 2-4 near copies: exact components, any split."""
    rng = np.random.default_rng(0)
    n, groups = 200_000, 20_000
    codes = rng.integers(0, 256, (n, 8), dtype=np.uint8)
    sizes = rng.integers(2, 5, groups)
    members = rng.permutation(n)[: sizes.sum()]
    group = np.repeat(np.arange(groups), sizes)
    first = members[np.r_[0, np.cumsum(sizes)[:-1]]]
    bits = np.unpackbits(codes[first[group]], axis=1)
    # Every member is 1 bit from its group's original code: members are within 2 bits of each other.
    bits[np.arange(len(members))[:, None], rng.integers(0, 64, (len(members), 1))] ^= 1
    codes[members] = np.packbits(bits, axis=1)
    expected = np.arange(n)
    expected[members] = np.minimum.reduceat(members[np.argsort(group, kind="stable")], np.r_[0, np.cumsum(sizes)[:-1]])[
        group
    ]
    single = cc.connected_components(n, ((i, j) for i, j, _ in hamming.near_pairs(codes, 2, "multihash")))
    assert (single == expected).all()
    for parts in (2, 4):
        labels = cc.connected_components(n, distributed_pairs(codes, 2, parts, "multihash"))
        assert (labels == expected).all()


@pytest.mark.parametrize("ranges", [1, 2, 4])
def test_ranges_with_variants_equal_one_index(ranges):
    """Helpers holding contiguous ranges: own, later blocks and every block's variants against one index each."""
    rng = np.random.default_rng(ranges)
    codes = _planted_codes(800, 8, 4, seed=9)
    owners = np.repeat(np.arange(len(codes)), 3)
    bits = np.unpackbits(codes[owners], axis=1)
    bits[np.arange(len(owners))[:, None], rng.integers(0, 64, (len(owners), 4))] ^= 1
    variants = np.packbits(bits, axis=1)
    index = hamming.build_index(codes, 4, "multihash")
    expected = _brute_force(codes, 2)
    i, j, _ = hamming.variant_pairs(index, variants, owners, 4)
    expected_variants = set(zip(i.tolist(), j.tolist(), strict=True))
    blocks = _blocks(codes, _split(len(codes), 8))
    per_block = []
    for offset, block in blocks:
        mine = (owners >= offset) & (owners < offset + len(block))
        per_block.append((variants[mine], owners[mine]))
    cuts = np.linspace(0, 8, ranges + 1).astype(int)
    base, var, count = set(), set(), 0
    for lo, hi in zip(cuts[:-1], cuts[1:], strict=True):
        own = np.concatenate([c for _, c in blocks[lo:hi]])
        for a, b, rows in code_pairs.range_pairs(own, blocks[lo][0], blocks[hi:], 2, method="multihash"):
            assert rows is None
            base |= set(zip(a.tolist(), b.tolist(), strict=True))
            count += len(a)
        # Radius -1 for the codes: only the variant queries.
        for a, b, rows in code_pairs.range_pairs(own, blocks[lo][0], blocks[hi:], -1, per_block, 4, "multihash"):
            var |= set(zip(a.tolist(), b.tolist(), strict=True))
            block = next(v for v, o in per_block if len(o) and len(rows) and o[rows[0]] == a[0])
            # The rows name the variant codes that matched: each is within the radius of its pair's code.
            assert (hamming.hamming(block[rows], codes[b]) <= 4).all()
    assert base == expected and count == len(expected)  # every pair once
    assert var == expected_variants and len(expected_variants) > 100


@pytest.mark.parametrize("count", [1, 2, 3, 4, 5, 8, 160])
def test_partner_ranges_search_every_pair_of_ranges_once_and_share_the_work(count):
    """Each pair of distinct ranges is searched by exactly one of its two helpers, and no helper's index meets
    more than one range above an even share (with "every later range", the first met all of them)."""
    partners = [code_pairs.partner_ranges(i, count) for i in range(count)]
    pairs = [frozenset((i, j)) for i in range(count) for j in partners[i]]
    assert len(pairs) == len(set(pairs)) == count * (count - 1) // 2
    sizes = [len(p) for p in partners]
    assert max(sizes) - min(sizes) <= 1 and max(sizes) == count // 2


@pytest.mark.parametrize("ranges", [2, 3, 4])
def test_partner_ranges_find_every_pair_once(ranges):
    codes = _planted_codes(800, 8, 4, seed=3)
    blocks = _blocks(codes, _split(len(codes), 8))
    cuts = np.linspace(0, 8, ranges + 1).astype(int)
    spans = [list(range(lo, hi)) for lo, hi in zip(cuts[:-1], cuts[1:], strict=True)]
    found = []
    for i, span in enumerate(spans):
        own = np.concatenate([blocks[p][1] for p in span])
        later = [blocks[p] for j in code_pairs.partner_ranges(i, ranges) for p in spans[j]]
        found += [
            p for a, b, _ in code_pairs.range_pairs(own, blocks[span[0]][0], later, 2) for p in zip(a, b, strict=True)
        ]
    assert set(found) == _brute_force(codes, 2) and len(found) == len(set(found))
