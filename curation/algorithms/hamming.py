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
"""

from __future__ import annotations

from typing import Iterator

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
        index = faiss.IndexBinaryFlat(bits)
    elif method == "multihash":
        nhash = bits // SUBSTRING_BITS
        index = faiss.IndexBinaryMultiHash(bits, nhash, SUBSTRING_BITS)
        index.nflip = max_distance // nhash  # exact by the pigeonhole principle
    else:
        raise ValueError(f"unknown Hamming search method '{method}' (auto, flat, multihash)")
    index.add(codes)
    return index


def near_pairs(codes: np.ndarray, max_distance: int, method: str = "auto", flat_max: int = 100_000,
               chunk: int = 1 << 18) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Every pair ``i < j`` with ``hamming(codes[i], codes[j]) <= max_distance``.

    ``codes``: ``(n, nbytes) uint8``. Yields chunks ``(i, j, distance)`` of
    int64 arrays; each pair appears exactly once.
    """
    n = len(codes)
    if n < 2 or max_distance < 0:
        return
    index = build_index(codes, max_distance, method, flat_max)
    for start in range(0, n, chunk):
        queries = np.ascontiguousarray(codes[start : start + chunk], dtype=np.uint8)
        # Faiss binary range search keeps distances strictly below the radius.
        lims, dist, ids = index.range_search(queries, max_distance + 1)
        i = np.repeat(np.arange(start, start + len(queries), dtype=np.int64), np.diff(lims).astype(np.int64))
        j = ids.astype(np.int64)
        keep = i < j
        if keep.any():
            yield i[keep], j[keep], dist[keep].astype(np.int64)

