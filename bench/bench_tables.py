"""The runner's per-batch status work in Arrow vs the same work through Python lists, side by side.

Every map batch goes through ``tables.drop`` (set the status of dropped rows) and the
runner's key check (the output rows are the input rows, in order). Both used to
round-trip their columns through Python lists; ``tests/test_tables.py`` keeps that
list version as the reference of their meaning, and this script times both on one
batch.

    PYTHONPATH=. .venv/bin/python bench/bench_tables.py --rows 200000
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from curation import tables
from tests.test_tables import batch, list_drop


def best_of(fn, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    args = parser.parse_args()
    t = batch(args.rows)
    mask = np.random.default_rng(0).random(args.rows) < 0.3
    statuses = np.where(mask, "duplicate_hash", tables.SUCCESS)
    same = list_drop(t, mask, "dedup", statuses).equals(tables.drop(t, mask, "dedup", statuses))
    drop_list = best_of(lambda: list_drop(t, mask, "dedup", statuses))
    drop_arrow = best_of(lambda: tables.drop(t, mask, "dedup", statuses))
    out = t.slice(0)
    keys_list = best_of(lambda: t.column("key").to_pylist() == out.column("key").to_pylist())
    keys_arrow = best_of(lambda: tables.same_keys(t, out))
    print(f"{args.rows} rows, 30 % dropped; same result: {same}")
    print(
        f"drop:      lists {drop_list * 1e3:7.1f} ms   arrow {drop_arrow * 1e3:7.1f} ms   x{drop_list / drop_arrow:.1f}"
    )
    print(
        f"key check: lists {keys_list * 1e3:7.1f} ms   arrow {keys_arrow * 1e3:7.1f} ms   x{keys_list / keys_arrow:.1f}"
    )


if __name__ == "__main__":
    main()
