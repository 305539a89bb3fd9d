"""The dedup graph step's decisions: one Parquet file per partition, written by the helpers, and the funnel.

The graph process decides only the images some pair or edge touches
(:class:`curation.algorithms.sparse_graph.Records`) and leaves them in the
work directory (``decided-*.npy``, with the sorted hash duplicates,
``hashdup.npy``); each helper then writes its own partitions' files
(:func:`write_range`): every other image is kept with default values. What
needs per-image data is computed where it lives: the Hamming distance of a
hash duplicate to its kept image from the helper's codes (the kept image's
codes read, memory-mapped, from its partition's file), the cosine of a copy
to its kept image from the units files, each survivor's nearest other from
the helper's own k-NN file, and keys from the partition tables.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation import tables

# Status of each decision code of ``sparse_graph.decide``, in funnel order.
STATUSES = (tables.SUCCESS, "duplicate_hash", "duplicate_copy", "benchmark_leak")
HASH_DUPLICATES, HASH_SHIFT = "hashdup.npy", "hashdup-shift.npy"


def save_records(work: Path, records: Any, hash_duplicates: np.ndarray) -> None:
    """The graph process's decisions and the sorted hash duplicates, for the helpers."""
    from curation.algorithms.sparse_graph import shift_of

    for f in fields(records):
        np.save(work / f"decided-{f.name}.npy", getattr(records, f.name))
    np.save(work / HASH_DUPLICATES, hash_duplicates)
    np.save(work / HASH_SHIFT, shift_of(hash_duplicates))


def _records(work: Path, a: int, b: int) -> dict[str, np.ndarray]:
    """The decided images of global ids ``[a, b)`` (memory-mapped files: only that slice is read)."""
    ids = np.load(work / "decided-ids.npy", mmap_mode="r")
    lo, hi = np.searchsorted(ids, [a, b])
    names = ("ids", "status", "ref", "component", "size", "hit", "count")
    return {n: np.asarray(np.load(work / f"decided-{n}.npy", mmap_mode="r")[lo:hi]) for n in names}


def _defaults(work: Path, a: int, b: int) -> dict[str, np.ndarray]:
    """Per image of ``[a, b)``: the decided values, defaults (kept, its own component of 1) elsewhere."""
    m, rec = b - a, _records(work, a, b)
    out: dict[str, np.ndarray] = {
        "status": np.zeros(m, np.int8),
        "ref": np.full(m, -1, np.int64),
        "component": np.arange(a, b, dtype=np.int64),
        "size": np.ones(m, np.int64),
        "hit": np.full(m, -1, np.int64),
        "count": np.zeros(m, np.int64),
    }
    at = rec["ids"] - a
    for name, values in out.items():
        values[at] = rec[name]
    return out


def write_range(
    shard: Any, index: int, offsets: dict[int, int], unit_offsets: dict[int, int] | None, names: list[str], method: str
) -> list[int]:
    """Helper side: ``decisions-part-P.parquet`` of each of the shard's partitions; returns its status counts.

    ``offsets``: global id start of every partition of the pool; ``unit_offsets``: survivor-id start per
    partition of the units files (None without descriptors); ``names``: the benchmark images'.
    """
    work, parts = shard.work, []
    hdup = np.load(work / HASH_DUPLICATES, mmap_mode="r")
    knn = _nearest_file(work, index)
    before = 0  # survivors of the shard's earlier partitions: rows of its k-NN file
    for p, lo, hi in shard.pool.ranges():  # the shard's own rows lo:hi; global ids a:b
        a, b = offsets[p], offsets[p] + hi - lo
        d = _defaults(work, a, b)
        first, last = np.searchsorted(hdup, [a, b])
        survivor = np.ones(b - a, bool)
        survivor[np.asarray(hdup[first:last]) - a] = False
        d["distance"] = _distances(shard, p, offsets, d)
        d["similarity"] = _similarity(shard, p, a, d, hdup, unit_offsets)
        d["nearest"], d["nearest_sim"] = _nearest(work, knn, survivor, before)
        before += int(survivor.sum())
        parts.append((p, lo, hi, d))
    keys = _KeyLookup(shard.pool, offsets, [x for *_, d in parts for x in (d["ref"], d["nearest"])])
    counts = np.zeros(len(STATUSES), np.int64)
    for p, lo, hi, d in parts:
        table = _table(shard.pool.keys[lo:hi], d, keys, names, method, _codes(work, p))
        tables.write_parquet(table, work.parent / f"decisions-{tables.partition_name(p)}.parquet")
        counts += np.bincount(d["status"].astype(np.int64), minlength=len(STATUSES))
    return counts.tolist()


def _codes(work: Path, p: int) -> np.ndarray:
    return np.load(work / f"codes-{tables.partition_name(p)}.npy")


def _distances(shard: Any, p: int, offsets: dict[int, int], d: dict[str, np.ndarray]) -> np.ndarray:
    """Hamming distance of each hash duplicate to its kept image (-1 elsewhere): the smallest over the two
    codes and, with variants, over either image's variant codes against the other's code (a group is
    chained, so it can exceed the radius)."""
    from curation.algorithms.hamming import hamming
    from curation.stages.dedup.streams import take_rows

    work, out = shard.work, np.full(len(d["status"]), -1, np.int64)
    own = np.flatnonzero(d["status"] == 1)
    if not len(own):
        return out
    ref = d["ref"][own]
    mine, theirs = _codes(work, p)[own], take_rows(work, "codes", offsets, ref)
    best = hamming(mine, theirs)
    if shard.cfg.hashing.variants.enabled:
        vmine = np.load(work / f"vcodes-{tables.partition_name(p)}.npy", mmap_mode="r")[own]
        vtheirs = take_rows(work, "vcodes", offsets, ref)
        for variant, code in ((vmine, theirs), (vtheirs, mine)):
            dist = np.unpackbits(variant ^ code[:, None, :], axis=-1).sum(axis=-1, dtype=np.int64).min(axis=1)
            best = np.minimum(best, dist)
    out[own] = best
    return out


def _similarity(shard: Any, p: int, a: int, d: dict, hdup: np.ndarray, unit_offsets: dict | None) -> np.ndarray:
    """Cosine of each copy duplicate's unit descriptor to its kept image's (NaN elsewhere)."""
    from curation.algorithms.sparse_graph import compact
    from curation.stages.dedup.streams import take_rows

    out = np.full(len(d["status"]), np.nan, np.float32)
    own = np.flatnonzero(d["status"] == 2)
    if not len(own) or unit_offsets is None:
        return out
    rows = compact(a + own, hdup) - unit_offsets[p]
    mine = np.load(shard.work / f"units-{tables.partition_name(p)}.npy", mmap_mode="r")[rows].astype(np.float32)
    theirs = take_rows(shard.work, "units", unit_offsets, compact(d["ref"][own], hdup)).astype(np.float32)
    out[own] = np.einsum("nd,nd->n", mine, theirs)
    return out


def _nearest_file(work: Path, index: int) -> dict[str, np.ndarray] | None:
    path = work / f"knn-{index:05d}.npz"
    if not path.exists():  # no self-dedup graph
        return None
    with np.load(path) as f:
        return {"nearest": f["nearest"], "nearest_sim": f["nearest_sim"]}


def _nearest(work: Path, knn: dict | None, survivor: np.ndarray, before: int) -> tuple[np.ndarray, np.ndarray]:
    """Global id and similarity of each survivor's most similar other survivor (-1 / NaN elsewhere)."""
    from curation.algorithms.sparse_graph import expand

    m = len(survivor)
    nearest, sim = np.full(m, -1, np.int64), np.full(m, np.nan, np.float32)
    if knn is None:
        return nearest, sim
    rows = slice(before, before + int(survivor.sum()))
    near, at = knn["nearest"][rows], np.flatnonzero(survivor)
    found = near >= 0
    nearest[at[found]] = expand(near[found], np.load(work / HASH_SHIFT, mmap_mode="r"))
    sim[at] = knn["nearest_sim"][rows]
    return nearest, sim


class _KeyLookup:
    """Keys of the global ids in ``wanted`` (arrays, -1 ignored): each partition's table read once."""

    def __init__(self, pool: Any, offsets: dict[int, int], wanted: list[np.ndarray]):
        ids = np.unique(np.concatenate([np.zeros(0, np.int64), *wanted]))
        self.ids = ids[ids >= 0]
        from curation.stages.dedup.streams import by_partition

        own, parts = {p: (a, b) for p, a, b in pool.ranges()}, []
        for p, start, at in by_partition(offsets, self.ids):  # ids are sorted: parts come in order
            keys = pool.keys.slice(own[p][0], own[p][1] - own[p][0]) if p in own else pool.keys_of(p)
            parts.append(keys.take(pa.array(self.ids[at] - start)))
        self.keys = pa.concat_arrays(parts) if parts else pa.array([], pa.large_string())

    def __call__(self, ids: np.ndarray) -> pa.Array:
        """Keys of ``ids`` as strings, null where an id is -1."""
        at = np.where(ids >= 0, np.searchsorted(self.ids, ids), -1)
        return _take(self.keys, at)


def _table(keys: pa.Array, d: dict, key_of: _KeyLookup, names: list[str], method: str, codes: np.ndarray) -> pa.Table:
    """One partition's decisions: one row per alive image, keyed by ``key``."""
    m, status = len(keys), d["status"]
    code, size = pa.array(status), pc.cast(pa.array(d["size"]), pa.string())
    ref, hit = key_of(d["ref"]), _take(pa.array(names, pa.string()), d["hit"])
    hashdup, copydup = status == 1, status == 2
    distance = pc.cast(pa.array(d["distance"]), pa.string())
    reason = pc.if_else(
        pc.equal(code, 1),
        _join("hash duplicate of ", ref, " (kept; ", method, " distance ", distance, ")"),
        pc.if_else(
            pc.equal(code, 2),
            _join("copy of ", ref, " (kept; component of ", size, ")"),
            _join("copy of benchmark image ", hit, " (whole component of ", size, " removed)"),
        ),
    )
    component, sim, near_sim = d["component"], d["similarity"], d["nearest_sim"]
    return pa.table(
        {
            "key": keys.cast(pa.string()),
            "status": pa.array(STATUSES, pa.string()).take(pa.array(status.astype(np.int64))),
            "reason": reason,
            "hash_method": pa.array([method] * m, pa.string()),
            "hash_code": pa.FixedSizeBinaryArray.from_buffers(
                pa.binary(codes.shape[1]), m, [None, pa.py_buffer(np.ascontiguousarray(codes).tobytes())]
            ),
            "duplicate_of": key_of(np.where(hashdup | copydup, d["ref"], -1)),
            "duplicate_distance": pa.array(d["distance"], pa.int32(), mask=~hashdup),
            "duplicate_similarity": pa.array(sim, mask=~copydup | np.isnan(sim)),
            "duplicate_count": pa.array(d["count"], pa.int64()),
            "copy_component": pa.array(component, mask=component < 0),
            "copy_component_size": pa.array(d["size"], mask=component < 0),
            "nearest_duplicate_key": key_of(d["nearest"]),
            "nearest_duplicate_similarity": pa.array(near_sim, mask=np.isnan(near_sim)),
            "benchmark_hit": hit,
        }
    )


def _take(values: pa.Array, index: np.ndarray) -> pa.Array:
    """``values[index]`` as strings, null where ``index`` is -1."""
    if not len(values):
        return pa.nulls(len(index), pa.string())
    return values.take(pa.array(index, mask=index < 0)).cast(pa.string())


def _join(*parts) -> pa.Array:
    return pc.binary_join_element_wise(*parts, "")


def funnel(inputs: int, described: int, counts: np.ndarray, benchmark_images: int) -> dict[str, int]:
    """Images left after each step, like the paper's 1.3B -> 1.1B -> 744M, from the summed status counts."""
    kept = described - np.cumsum(np.asarray(counts, np.int64)[1:])
    return {
        "input": inputs,
        "described": described,
        "after_hash": int(kept[0]),
        "after_self_dedup": int(kept[1]),
        "after_relative_dedup": int(kept[2]),
        "benchmark_images": benchmark_images,
    }
