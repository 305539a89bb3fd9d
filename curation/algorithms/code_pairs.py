"""Near-duplicate pairs of binary codes, block by block: the hash pass split over workers.

The pool's codes are the concatenation of ``P`` blocks (partitions), block
``j`` holding global ids ``offsets[j]:offsets[j + 1]``. Worker ``i`` finds
the pairs between its block and every block ``j >= i`` (:func:`block_pairs`):
each unordered pair of blocks is searched by exactly one worker, so the union
over workers is every pair ``a < b`` within the radius, each once.

Exactness is that of :mod:`curation.algorithms.hamming`: within a block pair
the search is a Faiss binary range search over an index of block ``j``
(brute force, or multi-index hashing with ``nflip = r // nhash``, exact by the
pigeonhole principle), verified on the full code. Splitting the pool into
blocks changes which index a pair is found in, never whether it is found.

Geometric variants are asymmetric (image ``a``'s variant near image ``b``'s
code), so worker ``i`` queries its variant codes against every block,
``j < i`` included (:func:`variant_block_pairs`).

Memory per worker, pool of ``N`` codes of ``B`` bytes in ``P`` blocks: its
own block and one other at a time, ``2 (N / P) B`` bytes, plus the index of
one block (flat: ``(N / P) B``; multihash: about 190 bytes per code, the
Faiss ``IndexBinaryMultiHash`` cost, so ``190 N / P``), plus the pairs found
(``16`` bytes each); with variants ``V (N / P) B`` more. At ``N = 1.2e9``,
``P = 1200``: about 200 MB per worker. Work: ``P (P + 1) / 2`` block
searches without variants.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from curation.algorithms import hamming


def block_pairs(queries: np.ndarray, query_offset: int, block: np.ndarray, block_offset: int, radius: int,
                method: str = "auto", flat_max: int = 100_000) -> tuple[np.ndarray, np.ndarray]:
    """Global ids ``(a, b)`` (int64, ``a < b``) of code pairs within ``radius`` across two blocks.

    ``queries`` ``(q, nbytes) uint8`` hold ids ``query_offset + arange(q)``;
    ``block`` ``(m, nbytes)`` ids ``block_offset + arange(m)``. When the two
    are the same block (equal offsets) each pair appears once; otherwise
    the blocks must not overlap.
    """
    if not len(queries) or not len(block) or radius < 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    index = hamming.build_index(block, radius, method, flat_max)
    a, b, _ = hamming.range_pairs(index, queries, query_offset + np.arange(len(queries), dtype=np.int64), radius)
    b = b + block_offset
    keep = a != b
    a, b = a[keep], b[keep]
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    if query_offset == block_offset:  # both (a, b) and (b, a) were found: keep one
        keep = a < b
        lo, hi = lo[keep], hi[keep]
    return lo, hi


def partition_pairs(own: np.ndarray, own_offset: int, blocks: Iterable[tuple[int, np.ndarray]], radius: int,
                    method: str = "auto", flat_max: int = 100_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Pairs of worker ``i``: its block ``own`` against each ``(offset, codes)`` of ``blocks``.

    ``blocks`` are the blocks ``j >= i`` (own included), read one at a time.
    """
    for offset, codes in blocks:
        a, b = block_pairs(own, own_offset, codes, offset, radius, method, flat_max)
        if len(a):
            yield a, b


def variant_block_pairs(variants: np.ndarray, owners: np.ndarray, blocks: Iterable[tuple[int, np.ndarray]],
                        radius: int, method: str = "auto",
                        flat_max: int = 100_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
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


def block_offsets(sizes: Iterable[int]) -> np.ndarray:
    """``(P + 1,)`` int64 starts of the blocks of the given sizes, and the total last."""
    return np.concatenate([[0], np.cumsum(np.fromiter(sizes, np.int64))]).astype(np.int64)
