"""Repeated URLs over the whole input, found once when the plan is made.

Exact string matches, in global row order (files sorted, rows in file order):
every later occurrence of a URL points at the row of its first occurrence.
The URL column of the whole input is held in memory once, as Arrow strings;
for lists too large for that, ``input.duplicate_urls: partition`` finds
repeats within each partition only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.atomic import atomic_path


def repeated_rows(urls: pa.ChunkedArray) -> np.ndarray:
    """(M, 2) int64 ``[row, first_row]`` of each non-empty URL seen before, rows ascending."""
    if len(urls) == 0:
        return np.zeros((0, 2), np.int64)
    # One dictionary over all chunks, values numbered by first appearance.
    codes = pc.dictionary_encode(urls.cast(pa.large_string()))
    index = np.concatenate([pc.fill_null(c.indices, -1).to_numpy().astype(np.int64) for c in codes.chunks])
    empty = pc.fill_null(pc.equal(urls, ""), True).to_numpy(zero_copy_only=False)
    valid = (index >= 0) & ~empty
    rows = np.flatnonzero(valid)
    values = index[valid]
    _, first_pos, inverse = np.unique(values, return_index=True, return_inverse=True)
    first = rows[first_pos][inverse]
    repeat = first != rows
    return np.stack([rows[repeat], first[repeat]], axis=1).astype(np.int64)


def save(path: Path, pairs: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, pairs, allow_pickle=False)


def in_range(pairs: np.ndarray, start: int, stop: int) -> np.ndarray:
    """The pairs whose row lies in ``[start, stop)`` (pairs sorted by row)."""
    lo, hi = np.searchsorted(pairs[:, 0], [start, stop])
    return pairs[lo:hi]
