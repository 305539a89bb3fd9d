"""Near-duplicate pairs of binary codes, block by block: the hash pass split over workers.

The pool's codes are the concatenation of ``P`` blocks (partitions), block
``j`` holding global ids ``offsets[j]:offsets[j + 1]``. Worker ``i`` finds
the pairs between its block and every block ``j >= i`` (:func:`block_pairs`):
each unordered pair of blocks is searched by exactly one worker, so the union
over workers is every pair ``a < b`` within the radius, each once. The dedup
graph's helpers each hold a contiguous range of blocks and index it once
(:func:`range_pairs`): its partner ranges' blocks (:func:`partner_ranges`,
about half the pool) and every block's variant codes are
streamed past that index, so each query meets ``S`` indexes (``S`` helpers)
instead of ``P``.

Exactness is that of :mod:`curation.algorithms.hamming`: within a block pair
the search is a Faiss binary range search over an index of block ``j``
(brute force, or multi-index hashing with ``nflip = r // nhash``, exact by the
pigeonhole principle), verified on the full code. Splitting the pool into
blocks changes which index a pair is found in, never whether it is found.

Geometric variants are asymmetric (image ``a``'s variant near image ``b``'s
code), so worker ``i`` queries its variant codes against every block,
``j < i`` included (:func:`variant_block_pairs`).

Memory per worker holding ``n_s`` of ``N`` codes of ``B`` bytes (``P``
blocks): its range, ``n_s B``, and its index (flat: ``n_s B``; multihash:
about 190 bytes per code, the Faiss ``IndexBinaryMultiHash`` cost), plus one
streamed block (``N / P`` codes, or their ``V`` variant codes each:
``V B N / P``) and the pairs found (``16`` bytes each). At ``N = 1.2e9``,
``S = 20`` ranges, ``P = 1200``: about 12 GB per worker. Work: every code
and variant code is a query against ``S`` indexes (multi-index hashing:
``~nhash * sum_{i <= nflip} C(32, i)`` probes each).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from curation.algorithms import hamming


def block_pairs(
    queries: np.ndarray,
    query_offset: int,
    block: np.ndarray,
    block_offset: int,
    radius: int,
    method: str = "auto",
    flat_max: int = 100_000,
    index=None,
) -> tuple[np.ndarray, np.ndarray]:
    """Global ids ``(a, b)`` (int64, ``a < b``) of code pairs within ``radius`` across two blocks.

    ``queries`` ``(q, nbytes) uint8`` hold ids ``query_offset + arange(q)``;
    ``block`` ``(m, nbytes)`` ids ``block_offset + arange(m)``. When the two
    are the same block (equal offsets) each pair appears once; otherwise
    the blocks must not overlap. ``index``: one already built over ``block``
    for a radius ``>= radius`` (reused across query blocks).
    """
    if not len(queries) or not len(block) or radius < 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    index = hamming.build_index(block, radius, method, flat_max) if index is None else index
    a, b, _ = hamming.range_pairs(index, queries, query_offset + np.arange(len(queries), dtype=np.int64), radius)
    b = b + block_offset
    keep = a != b
    a, b = a[keep], b[keep]
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    if query_offset == block_offset:  # both (a, b) and (b, a) were found: keep one
        keep = a < b
        lo, hi = lo[keep], hi[keep]
    return lo, hi


def partition_pairs(
    own: np.ndarray,
    own_offset: int,
    blocks: Iterable[tuple[int, np.ndarray]],
    radius: int,
    method: str = "auto",
    flat_max: int = 100_000,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Pairs of worker ``i``: its block ``own`` against each ``(offset, codes)`` of ``blocks``.

    ``blocks`` are the blocks ``j >= i`` (own included), read one at a time.
    """
    for offset, codes in blocks:
        a, b = block_pairs(own, own_offset, codes, offset, radius, method, flat_max)
        if len(a):
            yield a, b


def variant_block_pairs(
    variants: np.ndarray,
    owners: np.ndarray,
    blocks: Iterable[tuple[int, np.ndarray]],
    radius: int,
    method: str = "auto",
    flat_max: int = 100_000,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(owner, b)`` for variant codes ``(q, nbytes)`` within ``radius`` of code ``b`` of any block.

    ``owners`` ``(q,)``: the global id of the image each variant belongs to;
    pairs of an image with itself are dropped, repeats are kept (harmless to
    union-find). ``blocks``: every block of the pool.
    """
    if not len(variants):
        return
    for offset, codes in blocks:
        if not len(codes):
            continue
        index = hamming.build_index(codes, radius, method, flat_max)
        a, b, _ = hamming.range_pairs(index, variants, owners, radius)
        b = b + offset
        keep = a != b
        if keep.any():
            yield a[keep], b[keep]


def range_pairs(
    own: np.ndarray,
    own_offset: int,
    later: Iterable[tuple[int, np.ndarray]],
    radius: int,
    variants: Iterable[tuple[np.ndarray, np.ndarray]] = (),
    variant_radius: int = -1,
    method: str = "auto",
    flat_max: int = 100_000,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
    """Pairs found by the worker holding the contiguous range ``own`` (global ids from ``own_offset``).

    One index over ``own`` (built once, for the larger radius) answers: ``own``
    against itself, every block of ``later`` (the blocks of its
    :func:`partner_ranges`, or simply those after the range,
    ``(offset, codes)``) at ``radius``, and every ``(variant codes (q, nbytes),
    owners (q,))`` of ``variants`` (those of *every* block, own included) at
    ``variant_radius``. Over the workers of a pool cut into ranges, this is
    every pair once and every variant pair once (by the worker holding its
    indexed end): the search of one index over the pool.

    Yields ``(a, b, rows)``: code pairs with ``rows`` None, then variant pairs
    (``a`` the owner, ``b`` the indexed image) with ``rows`` the matching
    variant code's row in its ``variants`` block (which variant matched).
    """
    if not len(own):
        return
    index = hamming.build_index(own, max(radius, variant_radius), method, flat_max)
    for offset, codes in [(own_offset, own), *later]:
        a, b = block_pairs(codes, offset, own, own_offset, radius, index=index)
        if len(a):
            yield a, b, None
    for queries, owners in variants:
        rows, b, _ = hamming.range_pairs(index, queries, np.arange(len(queries), dtype=np.int64), variant_radius)
        a, b = np.asarray(owners, np.int64)[rows], b + own_offset
        keep = a != b
        if keep.any():
            yield a[keep], b[keep], rows[keep]


def partner_ranges(i: int, count: int) -> list[int]:
    """The other ranges whose codes worker ``i`` of ``count`` searches in its index (the ``later`` of
    :func:`range_pairs`): the next ``(count - 1) // 2`` ranges cyclically and, when ``count`` is even, the
    opposite one for the first half of the workers.

    Every pair of distinct ranges is searched by exactly one of its two workers, and every worker searches
    about half of the pool: with "every range after mine" the first worker's index met every code of the
    pool, and that worker alone set the pass's time.
    """
    partners = [(i + step) % count for step in range(1, (count - 1) // 2 + 1)]
    if count % 2 == 0 and i < count // 2:
        partners.append(i + count // 2)
    return sorted(partners)


def block_offsets(sizes: Iterable[int]) -> np.ndarray:
    """``(P + 1,)`` int64 starts of the blocks of the given sizes, and the total last."""
    return np.concatenate([[0], np.cumsum(np.fromiter(sizes, np.int64))]).astype(np.int64)
