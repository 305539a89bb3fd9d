"""The dedup helpers' Hamming-pair pass on simulated nodes (``bench_dedup_graph.py --hash-codes N``).

``N`` random 64-bit codes in ``--partitions`` work files (``codes-part-P.npy``,
the helpers' own layout), ``--dup-frac`` of them planted near-duplicates:
groups of 2-6 copies of one code with 0 to ``--radius`` bits flipped from it.
On a simulated cluster (``tests.simcluster``: a CPU-less head and one
1-CPU node per helper) each of 1, 2 and 4 helpers runs what
``DedupShard.pairs`` runs without the pixel check and the variants (the
paper's recipe turns variants off): one index over its contiguous range of
partitions (multi-index hashing above ``flat_max`` codes), queried by its own
codes and by those of its partner ranges (``code_pairs.partner_ranges``),
streamed one file at a time
(:func:`curation.algorithms.code_pairs.range_pairs`). Printed per helper:
codes held, queries (codes searched in its index), pairs, wall and CPU
seconds, queries per CPU-second, peak RSS (VmHWM). Every run must find the
same pairs, and every planted pair within the radius.
"""

from __future__ import annotations

import resource
import tempfile
import time
from pathlib import Path

import numpy as np


def make_codes(root: Path, n: int, parts: int, dup_frac: float, radius: int, seed: int = 0) -> tuple[list[int], int]:
    """Writes the partition files; returns their global starts (and the total last) and the planted pairs."""
    from curation.stages.dedup.streams import file_name

    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 256, (n, 8), dtype=np.uint8)
    sizes = []
    while sum(sizes) < dup_frac * n:
        sizes.append(int(rng.integers(2, 7)))
    rows = rng.permutation(n)[: sum(sizes)]
    group = np.repeat(np.arange(len(sizes)), sizes)
    source = rng.integers(0, 256, (len(sizes), 8), dtype=np.uint8)
    bits = np.unpackbits(source[group], axis=1)
    for r in range(len(rows)):  # each copy: up to radius / 2 flips, so any two copies are within the radius
        flip = rng.choice(64, size=int(rng.integers(0, radius // 2 + 1)), replace=False)
        bits[r, flip] ^= 1
    codes[rows] = np.packbits(bits, axis=1)
    planted = int(sum(s * (s - 1) // 2 for s in sizes))
    cuts = np.linspace(0, n, parts + 1).astype(np.int64)
    for p in range(parts):
        np.save(root / file_name("codes", p), codes[cuts[p] : cuts[p + 1]])
    return cuts.tolist(), planted


class HashHelper:
    """One helper's pass 2 over the shared work files."""

    def run(self, root: str, ranges: list[list[int]], index: int, starts: list[int], radius: int) -> dict:
        import faiss

        from curation.algorithms import code_pairs
        from curation.stages.dedup.streams import Blocks

        faiss.omp_set_num_threads(1)
        work, own = Path(root), ranges[index]
        offsets = {p: starts[p] for p in range(len(starts) - 1)}
        t0, c0 = time.perf_counter(), _cpu()
        mine = np.concatenate([np.load(work / f"codes-{_part(p)}.npy") for p in own])
        partners = [q for j in code_pairs.partner_ranges(index, len(ranges)) for q in ranges[j]]
        later = Blocks(work, "codes", sorted(partners), offsets)
        found = list(code_pairs.range_pairs(mine, starts[own[0]], later, radius))
        pairs = np.concatenate([np.stack([a, b], 1) for a, b, _ in found]) if found else np.zeros((0, 2), np.int64)
        np.save(work / f"pairs-{own[0]:05d}.npy", pairs)
        return {
            "codes": len(mine),
            "queries": len(mine) + sum(starts[q + 1] - starts[q] for q in partners),
            "pairs": len(pairs),
            "seconds": time.perf_counter() - t0,
            "cpu": _cpu() - c0,
            "peak_rss": _vm_hwm(),
        }


def _part(p: int) -> str:
    from curation import tables

    return tables.partition_name(p)


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _vm_hwm() -> int:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmHWM"))


def bench(args) -> None:
    import ray

    from curation.algorithms.sharded_index import shard_ranges
    from tests.simcluster import simulated_cluster

    counts = [int(c) for c in args.helpers.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        starts, planted = make_codes(root, args.hash_codes, args.partitions, args.dup_frac, args.radius)
        print(
            f"{args.hash_codes:,} codes in {args.partitions} partitions, {planted:,} planted pairs: "
            f"{time.perf_counter() - t0:.0f} s"
        )
        with simulated_cluster("hashbench", max(counts), {"num_cpus": 1}):
            actor = ray.remote(num_cpus=1)(HashHelper)
            results = {}
            for w in counts:
                helpers = [actor.options(scheduling_strategy="SPREAD").remote() for _ in range(w)]
                ranges = shard_ranges(list(np.diff(starts)), w)
                spans = [list(range(lo, hi)) for lo, hi in ranges]
                t0 = time.perf_counter()
                stats = ray.get([h.run.remote(str(root), spans, i, starts, args.radius) for i, h in enumerate(helpers)])
                wall = time.perf_counter() - t0
                for h in helpers:
                    ray.kill(h)
                pairs = {tuple(p) for lo, _ in ranges for p in np.load(root / f"pairs-{lo:05d}.npy").tolist()}
                results[w] = pairs
                total = sum(s["pairs"] for s in stats)
                print(f"{w} helper(s): {wall:.0f} s wall, {total:,} pairs ({len(pairs):,} distinct)")
                for i, s in enumerate(stats):
                    print(
                        f"  helper {i}: {s['codes']:,} codes held, {s['queries']:,} queries, {s['pairs']:,} pairs, "
                        f"{s['seconds']:.0f} s wall, {s['cpu']:.0f} CPU s, {s['queries'] / s['cpu']:,.0f} queries "
                        f"per CPU-second, {s['pairs'] / s['seconds']:,.0f} pairs/s, "
                        f"peak RSS {s['peak_rss'] / 2**20:,.0f} MiB"
                    )
        same = all(results[w] == results[counts[0]] for w in counts)
        print(
            f"same pairs for {counts} helpers: {same}; planted pairs found: "
            f"{len(results[counts[0]]) >= planted} ({len(results[counts[0]]):,} >= {planted:,})"
        )
