"""The dedup helpers' work files read as streams: one partition at a time, never a helper's whole range.

Each helper writes per-partition ``.npy`` files (``{kind}-part-P.npy``) in the
graph step's work directory; these readers give any helper the rows of any
partition in pool order (:class:`Blocks`, :class:`Variants`), or its own rows a
query block at a time (:class:`Rows`, :class:`Chunks`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from curation import tables


def file_name(kind: str, partition: int) -> str:
    return f"{kind}-{tables.partition_name(partition)}.npy"


class Rows:
    """A helper's own unit descriptors (``units-part-P.npy``, rows selected by a ``mask`` work file when
    given) as one ``(n, d)`` float32 sequence read on demand: ``rows[lo:hi]`` loads only the partitions
    it spans, so a query block is all that is held."""

    def __init__(self, work: Path, partitions: list[int], mask: str | None, dims: int):
        self.work, self.partitions, self.mask, self.dims = work, partitions, mask, dims
        self.sizes = [len(self._keep(p)) if mask else _rows_in(work, p) for p in partitions]
        self.starts = np.concatenate([[0], np.cumsum(self.sizes)]).astype(np.int64)

    def _keep(self, p: int) -> np.ndarray:
        assert self.mask is not None  # only called with a mask
        return np.flatnonzero(np.load(self.work / file_name(self.mask, p), allow_pickle=False))

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, rows: slice) -> np.ndarray:
        lo, hi, _ = rows.indices(len(self))
        out = [np.zeros((0, self.dims), np.float32)]
        for j, p in enumerate(self.partitions):
            a, b = max(lo, self.starts[j]), min(hi, self.starts[j + 1])
            if a < b:
                x = np.load(self.work / file_name("units", p), mmap_mode="r", allow_pickle=False)
                at = np.arange(a, b) - self.starts[j]
                out.append(np.asarray(x[self._keep(p)[at] if self.mask else at], np.float32))
        return np.concatenate(out)


def _rows_in(work: Path, p: int) -> int:
    return int(np.load(work / file_name("units", p), mmap_mode="r", allow_pickle=False).shape[0])


class Chunks:
    """``(global offset, rows)`` of ``queries`` ``step`` rows at a time (re-iterable: a block stream)."""

    def __init__(self, queries: Rows, start: int, step: int):
        self.queries, self.start, self.step = queries, start, step

    def __iter__(self):
        for lo in range(0, len(self.queries), self.step):
            yield self.start + lo, self.queries[lo : lo + self.step]


class Variants:
    """``(variant codes (m V, bytes), owners (m V,))`` of every partition's ``vcodes`` file, in order."""

    def __init__(self, work: Path, partitions: list[int], offsets: dict[int, int]):
        self.work, self.partitions, self.offsets = work, partitions, offsets

    def __iter__(self):
        for p in self.partitions:
            v = np.load(self.work / file_name("vcodes", p), allow_pickle=False)
            owners = np.repeat(self.offsets[p] + np.arange(len(v), dtype=np.int64), v.shape[1])
            yield v.reshape(-1, v.shape[-1]), owners


class Blocks:
    """``(offset, array)`` of the partitions' work files, read one at a time, in order (re-iterable).

    ``mask``: a boolean work file per partition selecting rows (the kept images); ``lists``: a work file of
    each row's inverted list, yielded third.
    """

    def __init__(
        self,
        work: Path,
        kind: str,
        partitions: list[int],
        offsets: dict[int, int] | None,
        mask: str | None = None,
        lists: str | None = None,
    ):
        self.work, self.kind, self.partitions, self.offsets = work, kind, partitions, offsets
        self.mask, self.lists = mask, lists

    def __iter__(self):
        for p in self.partitions:
            names = [self.kind] + ([self.lists] if self.lists else [])
            arrays = [np.load(self.work / file_name(name, p), allow_pickle=False) for name in names]
            if self.mask is not None:
                keep = np.load(self.work / file_name(self.mask, p), allow_pickle=False)
                arrays = [a[keep] for a in arrays]
            yield ((self.offsets[p] if self.offsets is not None else 0), *arrays)


def by_partition(offsets: dict[int, int], ids: np.ndarray):
    """``(partition, its first id, positions in ids)`` of every partition that holds some of global ``ids``
    (any order), in partition order: one sort, whatever the number of partitions."""
    parts = sorted(offsets)
    where = np.searchsorted([offsets[p] for p in parts], ids, side="right") - 1
    order = np.argsort(where, kind="stable")
    groups, cut = np.unique(where[order], return_index=True)
    for j, at in zip(groups, np.split(order, cut[1:]) if len(ids) else [], strict=True):
        yield parts[j], offsets[parts[j]], at


def take_rows(work: Path, kind: str, offsets: dict[int, int], ids: np.ndarray) -> np.ndarray:
    """Rows ``ids`` (any order) of the per-partition work files ``{kind}-part-P.npy`` whose first rows have
    ids ``offsets[P]``; memory-mapped: only the rows asked for are read."""
    ids = np.asarray(ids, np.int64)
    out = None
    for p, start, at in by_partition(offsets, ids):
        x = np.load(work / file_name(kind, p), mmap_mode="r")
        if out is None:
            out = np.zeros((len(ids), *x.shape[1:]), x.dtype)
        out[at] = x[ids[at] - start]
    return out if out is not None else np.zeros(0, np.int64)
