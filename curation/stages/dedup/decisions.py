"""The dedup graph step's decisions: one Parquet file per partition, and the funnel."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation import tables

# Status of each decision code of ``components.decide``, in funnel order.
STATUSES = (tables.SUCCESS, "duplicate_hash", "duplicate_copy", "benchmark_leak")


def write_decisions(
    out_dir: Path, pool: Any, dec, codes: np.ndarray, copy: Any, distance: np.ndarray, method: str
) -> None:
    """``decisions-part-NNNNNN.parquet`` per partition: one row per alive image, keyed by ``key``."""
    n, survivors = len(pool), np.flatnonzero(dec.component >= 0)
    nearest, nearest_sim, similarity = (
        np.full(n, -1, np.int64),
        np.full(n, np.nan, np.float32),
        np.full(n, np.nan, np.float32),
    )
    found = copy.nearest >= 0
    nearest[survivors[found]] = survivors[copy.nearest[found]]
    nearest_sim[survivors], similarity[survivors] = copy.nearest_sim, copy.similarity
    count = _duplicate_counts(dec)
    statuses, bench = pa.array(STATUSES, pa.string()), pa.array(copy.bench_names, pa.string())
    for p, a, b in pool.ranges():
        nodes = slice(a, b)
        status = statuses.take(pa.array(dec.status[nodes].astype(np.int64)))
        ref = _take(pool.keys, dec.ref[nodes])
        hit = _take(bench, dec.hit[nodes])
        size = pc.cast(pa.array(dec.component_size[nodes]), pa.string())
        code = pa.array(dec.status[nodes])
        reason = pc.if_else(
            pc.equal(code, 1),
            _join(
                "hash duplicate of ",
                ref,
                " (kept; ",
                method,
                " distance ",
                pc.cast(pa.array(distance[nodes]), pa.string()),
                ")",
            ),
            pc.if_else(
                pc.equal(code, 2),
                _join("copy of ", ref, " (kept; component of ", size, ")"),
                _join("copy of benchmark image ", hit, " (whole component of ", size, " removed)"),
            ),
        )
        hashdup, copydup = dec.status[nodes] == 1, dec.status[nodes] == 2
        table = pa.table(
            {
                "key": pool.keys[a:b].cast(pa.string()),
                "status": status,
                "reason": reason,
                "hash_method": pa.array([method] * (b - a), pa.string()),
                "hash_code": pa.FixedSizeBinaryArray.from_buffers(
                    pa.binary(codes.shape[1]), b - a, [None, pa.py_buffer(np.ascontiguousarray(codes[nodes]).tobytes())]
                ),
                "duplicate_of": _take(pool.keys, np.where(hashdup | copydup, dec.ref[nodes], -1)),
                "duplicate_distance": pa.array(distance[nodes], pa.int32(), mask=~hashdup),
                "duplicate_similarity": pa.array(similarity[nodes], mask=~copydup | np.isnan(similarity[nodes])),
                "duplicate_count": pa.array(count[nodes], pa.int64()),
                "copy_component": pa.array(dec.component[nodes], mask=dec.component[nodes] < 0),
                "copy_component_size": pa.array(dec.component_size[nodes], mask=dec.component[nodes] < 0),
                "nearest_duplicate_key": _take(pool.keys, nearest[nodes]),
                "nearest_duplicate_similarity": pa.array(nearest_sim[nodes], mask=np.isnan(nearest_sim[nodes])),
                "benchmark_hit": hit,
            }
        )
        tables.write_parquet(table, out_dir / f"decisions-{tables.partition_name(p)}.parquet")


def _duplicate_counts(dec) -> np.ndarray:
    """Per image ``(n,)``: images dropped in favour of it, through hash groups and copy components."""
    from curation.algorithms import components as cc

    n = len(dec.status)
    final = np.arange(n)
    copy = dec.status == cc.COPY_DUPLICATE
    final[copy] = dec.ref[copy]
    hashed = dec.status == cc.HASH_DUPLICATE
    final[hashed] = final[dec.ref[hashed]]  # a hash group's kept image may itself be a copy
    count = np.bincount(final, minlength=n) - 1
    return np.where(final == np.arange(n), count, 0)


def _take(values: pa.Array, index: np.ndarray) -> pa.Array:
    """``values[index]`` as strings, null where ``index`` is -1."""
    if not len(values):
        return pa.nulls(len(index), pa.string())
    return values.take(pa.array(index, mask=index < 0)).cast(pa.string())


def _join(*parts) -> pa.Array:
    return pc.binary_join_element_wise(*parts, "")


def funnel(pool: Any, status: np.ndarray, benchmark_images: int) -> dict[str, int]:
    """Images left after each step, like the paper's 1.3B -> 1.1B -> 744M."""
    counts = np.bincount(status.astype(np.int64), minlength=len(STATUSES))
    kept = len(pool) - np.cumsum(counts[1:])
    return {
        "input": pool.inputs,
        "described": len(pool),
        "after_hash": int(kept[0]),
        "after_self_dedup": int(kept[1]),
        "after_relative_dedup": int(kept[2]),
        "benchmark_images": benchmark_images,
    }
