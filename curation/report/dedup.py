"""Report section: duplicate groups side by side, the closest calls first.

- hash duplicates: the kept image and its dropped copies, with the Hamming
  distance of their codes; groups whose distance is nearest the threshold
  (``dedup.hashing.max_distance``) come first;
- copy duplicates: the image kept in a component and the dropped copies, each
  with its similarity to its nearest neighbour; groups whose weakest edge is
  nearest the threshold (``dedup.copy_dedup.threshold``) come first;
- near misses: kept images whose nearest neighbour falls just under the
  threshold: what a slightly lower threshold would drop;
- benchmark leaks: each dropped pool image beside the benchmark image it copies.

At most ``MAX_PARTITIONS`` partitions are read (a random sample of them on a
large run); the section says how many.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from curation import tables
from curation.report import html as h
from curation.report.run import RunView
from curation.report.thumbs import Thumbnails

MAX_PARTITIONS = 64
GROUPS = 8
COPIES_PER_GROUP = 5
COLUMNS = [
    "key",
    "status",
    "duplicate_of",
    "duplicate_distance",
    "copy_component",
    "nearest_duplicate_key",
    "nearest_duplicate_similarity",
    "benchmark_hit",
]
DUPLICATES = ("duplicate_hash", "duplicate_copy", "benchmark_leak")


def dedup_section(view: RunView, thumbs: Thumbnails) -> str:
    if not view.has("dedup"):
        return '<p class="muted">the dedup stage has not run</p>'
    cfg = view.section("dedup")
    rows, near, read = _scan(view, cfg.copy_dedup.threshold)
    total = len(view.partitions("dedup", shuffled=False))
    out = [
        f'<p class="muted">from {read} of {total} partitions; hash threshold {cfg.hashing.max_distance} bits, '
        f"copy threshold {cfg.copy_dedup.threshold}, relative threshold {cfg.relative.threshold}</p>"
    ]
    out.append("<h3>Hash duplicates (Hamming distance of the codes; largest distance first)</h3>")
    out.append(_hash_groups(view, rows, thumbs))
    out.append("<h3>Copy duplicates (similarity to the nearest neighbour; lowest first)</h3>")
    out.append(_copy_groups(view, rows, thumbs))
    out.append(f"<h3>Near misses: kept, nearest neighbour just under the copy threshold</h3>{_near(near, thumbs)}")
    out.append(f"<h3>Benchmark leaks (pool image, benchmark image)</h3>{_leaks(rows, thumbs)}")
    return "".join(out)


def _scan(view: RunView, threshold: float) -> tuple[pa.Table, pa.Table, int]:
    """Duplicate rows, and the kept rows most similar to their neighbour under ``threshold``, of sampled partitions."""
    dup_parts, near_parts, read = [], [], 0
    wanted = pa.array(DUPLICATES)
    for part in view.scan("dedup", COLUMNS, max_partitions=MAX_PARTITIONS):
        read += 1
        if "copy_component" not in part.column_names:  # a partition without any described image
            continue
        dup_parts.append(part.filter(pc.is_in(part["status"], value_set=wanted)))
        kept = part.filter(
            pc.and_(pc.equal(part["status"], tables.SUCCESS), pc.less(part["nearest_duplicate_similarity"], threshold))
        )
        near_parts.append(_top(kept, "nearest_duplicate_similarity", GROUPS, descending=True))
    empty = pa.table({c: pa.array([], pa.string()) for c in ("key", "status")})
    rows = pa.concat_tables(dup_parts, promote_options="default") if dup_parts else empty
    near = pa.concat_tables(near_parts, promote_options="default") if near_parts else empty
    return rows, (_top(near, "nearest_duplicate_similarity", GROUPS, True) if near.num_rows else near), read


def _top(t: pa.Table, column: str, n: int, descending: bool) -> pa.Table:
    order = "descending" if descending else "ascending"
    return t.take(pc.sort_indices(t, sort_keys=[(column, order)])[:n]) if t.num_rows else t


def _of(rows: pa.Table, status: str) -> list[dict[str, Any]]:
    return rows.filter(pc.equal(rows["status"], status)).to_pylist() if rows.num_rows else []


def _hash_groups(view: RunView, rows: pa.Table, thumbs: Thumbnails) -> str:
    dropped = _of(rows, "duplicate_hash")
    if not dropped:
        return '<p class="muted">none</p>'
    # The stage records each drop's distance (to the kept code, or to one of its variants' codes).
    groups: dict[str, list[tuple[int, dict]]] = {}
    for r in dropped:
        distance = r["duplicate_distance"] if r["duplicate_distance"] is not None else -1
        groups.setdefault(r["duplicate_of"], []).append((distance, r))
    order = sorted(groups, key=lambda k: -max(d for d, _ in groups[k]))[:GROUPS]
    out = []
    for kept in order:
        copies = sorted(groups[kept], key=lambda dr: -dr[0])[:COPIES_PER_GROUP]
        figures = [h.figure(thumbs.pool(kept), f"kept {kept}", "kept"), '<span class="arrow">&rarr;</span>']
        figures += [h.figure(thumbs.pool(r["key"]), f"{r['key']} distance {d} bits", "dropped") for d, r in copies]
        out.append(f'<div class="group">{h.row(figures)}</div>')
    return "".join(out)


def _copy_groups(view: RunView, rows: pa.Table, thumbs: Thumbnails) -> str:
    dropped = _of(rows, "duplicate_copy")
    if not dropped:
        return '<p class="muted">none</p>'
    groups: dict[int, list[dict]] = {}
    for r in dropped:
        groups.setdefault(r["copy_component"], []).append(r)
    weakest = {c: min(_sim(r) for r in g) for c, g in groups.items()}
    order = sorted(groups, key=lambda c: weakest[c])[:GROUPS]
    kept = _kept_of_components(view, order)
    out = []
    for c in order:
        copies = sorted(groups[c], key=_sim)[:COPIES_PER_GROUP]
        figures = [
            h.figure(thumbs.pool(kept[c]) if c in kept else None, f"kept {kept.get(c, '?')}", "kept"),
            '<span class="arrow">&rarr;</span>',
        ]
        figures += [
            h.figure(
                thumbs.pool(r["key"]), f"{r['key']} similarity {_sim(r):.3f} to {r['nearest_duplicate_key']}", "dropped"
            )
            for r in copies
        ]
        out.append(f'<div class="group">{h.row(figures)}</div>')
    return "".join(out)


def _sim(r: dict) -> float:
    s = r.get("nearest_duplicate_similarity")
    return float("inf") if s is None else float(s)


def _near(near: pa.Table, thumbs: Thumbnails) -> str:
    if not near.num_rows:
        return '<p class="muted">none</p>'
    out, shown = [], set()
    for r in near.to_pylist():
        pair = frozenset((r["key"], r["nearest_duplicate_key"]))
        if pair in shown:  # each other's nearest: one pair
            continue
        shown.add(pair)
        figures = [
            h.figure(thumbs.pool(r["key"]), f"kept {r['key']}", "kept"),
            h.figure(
                thumbs.pool(r["nearest_duplicate_key"]),
                f"nearest {r['nearest_duplicate_key']} similarity {_sim(r):.3f}",
                "",
            ),
        ]
        out.append(f'<div class="group">{h.row(figures)}</div>')
    return "".join(out)


def _leaks(rows: pa.Table, thumbs: Thumbnails) -> str:
    leaks = _of(rows, "benchmark_leak")[: GROUPS * 2]
    if not leaks:
        return '<p class="muted">none</p>'
    out = []
    for r in leaks:
        hit = r.get("benchmark_hit") or ""
        figures = [h.figure(thumbs.pool(r["key"]), f"dropped {r['key']}", "dropped")]
        if hit:
            figures.append(h.figure(thumbs.benchmark(hit), f"benchmark {hit}", "query"))
        out.append(f'<div class="group">{h.row(figures)}</div>')
    return "".join(out)


def _kept_of_components(view: RunView, components: list[int]) -> dict[int, str]:
    """The alive image of each copy component, scanning partitions until all are found."""
    wanted = pa.array(components, pa.int64())
    found: dict[int, str] = {}

    def where(t):
        return pc.and_(
            pc.equal(t["status"], tables.SUCCESS),
            pc.is_in(t["copy_component"], value_set=wanted),
        )

    for t in view.scan(
        "dedup", ["key", "status", "copy_component"], where, enough=lambda: len(found) == len(components)
    ):
        found.update(zip(t["copy_component"].to_pylist(), t["key"].to_pylist(), strict=False))
    return found
