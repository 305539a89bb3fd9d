"""Near-duplicate search on packed binary codes, without all pairs.

Pairs of codes within a Hamming distance ``r`` are found with Faiss binary
indexes, queried in chunks so that memory does not grow with the pool:

- ``flat`` (``IndexBinaryFlat``): brute-force popcounts, O(n^2); exact; the
  fastest below ~100k codes.
- ``multihash`` (``IndexBinaryMultiHash``): multi-index hashing. The code is
  split into ``nhash`` substrings of ``b = 32`` bits, each in a hash table.
  By the pigeonhole principle, two codes within distance ``r`` agree within
  ``floor(r / nhash)`` bits on at least one substring, so probing every
  bucket within that many bit flips of each substring finds *every* pair
  (exact, not approximate); candidates are verified on the full code. The
  cost per query is about ``nhash * sum_{i<=nflip} C(b, i)`` hash probes
  plus the bucket contents (``n / 2^b`` per bucket: tiny up to billions).

Geometric variants (:mod:`curation.algorithms.variants`) are extra *queries*
against the same index of one code per image (:func:`variant_pairs`): the
index is built for the largest radius used, so the pigeonhole bound holds
for every query, and the search stays exact.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

SUBSTRING_BITS = 32


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise Hamming distances of packed codes ``(n, nbytes)`` -> ``(n,) int64``."""
    return np.unpackbits(np.bitwise_xor(a, b), axis=-1).sum(axis=-1, dtype=np.int64)


def build_index(codes: np.ndarray, max_distance: int, method: str = "auto", flat_max: int = 100_000):
    """A Faiss binary index over ``codes`` ``(n, nbytes) uint8`` for radius search."""
    import faiss

    codes = np.ascontiguousarray(codes, dtype=np.uint8)
    bits = codes.shape[1] * 8
    if method == "auto":
        method = "flat" if len(codes) <= flat_max or bits < 2 * SUBSTRING_BITS else "multihash"
    if method == "flat":
        index: faiss.IndexBinary = faiss.IndexBinaryFlat(bits)
    elif method == "multihash":
        nhash = bits // SUBSTRING_BITS
        multihash = faiss.IndexBinaryMultiHash(bits, nhash, SUBSTRING_BITS)
        multihash.nflip = max_distance // nhash  # exact by the pigeonhole principle
        index = multihash
    else:
        raise ValueError(f"unknown Hamming search method '{method}' (auto, flat, multihash)")
    index.add(codes)
    return index


def near_pairs(
    codes: np.ndarray,
    max_distance: int,
    method: str = "auto",
    flat_max: int = 100_000,
    chunk: int = 1 << 18,
    index=None,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Every pair ``i < j`` with ``hamming(codes[i], codes[j]) <= max_distance``.

    ``codes``: ``(n, nbytes) uint8``. Yields chunks ``(i, j, distance)`` of
    int64 arrays; each pair appears exactly once. ``index``: one built by
    :func:`build_index` over ``codes`` for a radius ``>= max_distance``.
    """
    n = len(codes)
    if n < 2 or max_distance < 0:
        return
    index = build_index(codes, max_distance, method, flat_max) if index is None else index
    for start in range(0, n, chunk):
        i, j, dist = range_pairs(
            index, codes[start : start + chunk], np.arange(start, min(n, start + chunk)), max_distance
        )
        keep = i < j
        if keep.any():
            yield i[keep], j[keep], dist[keep]


def variant_pairs(
    index, queries: np.ndarray, owners: np.ndarray, max_distance: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs ``(owner, j, distance)`` of query codes within ``max_distance`` of indexed code ``j``.

    ``queries`` ``(q, nbytes) uint8``: variant codes; ``owners`` ``(q,)``: the
    indexed image each belongs to (pairs with itself are dropped). A pair may
    repeat (several variants of one image match): harmless to union-find.
    ``index`` must be built for a radius ``>= max_distance`` (exactness).
    """
    i, j, dist = range_pairs(index, queries, np.asarray(owners, np.int64), max_distance)
    keep = i != j
    return i[keep], j[keep], dist[keep]


def range_pairs(
    index, queries: np.ndarray, owners: np.ndarray, max_distance: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(owners[q], j, distance)`` for every query ``q`` and indexed code ``j`` within ``max_distance``."""
    if not len(queries):
        empty = np.zeros(0, np.int64)
        return empty, empty, empty
    queries = np.ascontiguousarray(queries, dtype=np.uint8)
    # Faiss binary range search keeps distances strictly below the radius.
    lims, dist, ids = index.range_search(queries, max_distance + 1)
    i = np.repeat(owners, np.diff(lims).astype(np.int64))
    return i, ids.astype(np.int64), dist.astype(np.int64)
