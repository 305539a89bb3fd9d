"""Report sections: clusters, retrieval (queries beside their neighbours) and composition against the plan."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation import tables
from curation.atomic import read_json
from curation.report import html as h
from curation.report.run import RunView
from curation.report.thumbs import Thumbnails

PICKED_CLUSTERS = 3  # largest, smallest and random ones shown each
IMAGES_PER_CLUSTER = 8
QUERIES_SHOWN = 6
NEIGHBOURS_SHOWN = 8


def clusters_section(view: RunView, thumbs: Thumbnails) -> str:
    path = view.ctx("cluster").step_dir("sizes") / "sizes.parquet"
    if not view.has("cluster") or not path.exists():
        return '<p class="muted">the cluster stage has not run</p>'
    sizes = tables.read_parquet(path)
    sizes = sizes.filter(pc.equal(sizes["level"], 0))
    size = sizes["size"].to_numpy()
    ids = sizes["cluster"].to_numpy()
    nonempty = np.flatnonzero(size > 0)
    out = [
        f"<p>{len(size):,} clusters, {int((size == 0).sum()):,} empty; sizes from "
        f"{int(size[nonempty].min()) if len(nonempty) else 0:,} to {int(size.max()) if len(size) else 0:,}</p>",
        "<h3>Cluster size histogram (clusters per size range)</h3>",
        h.bar_chart(size_histogram(size)),
    ]
    by_size = nonempty[np.argsort(-size[nonempty], kind="stable")]
    largest, smallest = by_size[:PICKED_CLUSTERS], by_size[::-1][:PICKED_CLUSTERS]
    rest = np.setdiff1d(by_size, np.concatenate([largest, smallest]))
    randoms = view.rng.choice(rest, size=min(PICKED_CLUSTERS, len(rest)), replace=False) if len(rest) else rest
    picked = {"largest": ids[largest], "smallest": ids[smallest], "random": ids[np.sort(randoms)]}
    members = _cluster_members(view, sorted({int(c) for group in picked.values() for c in group}))
    for label, group in picked.items():
        out.append(f"<h3>{label.capitalize()} clusters</h3>")
        for c in group:
            rows = members.get(int(c), [])
            figures = [h.figure(thumbs.pool(r["key"]), f"{r['key']} sim {r['similarity']:.3f}") for r in rows]
            out.append(
                f'<div class="group"><b>cluster {int(c)}</b> <span class=muted>({int(size[ids == c][0]):,} '
                f"images; closest to the centroid first, of those sampled)</span>{h.row(figures)}</div>"
            )
    return "".join(out)


def size_histogram(size: np.ndarray) -> list[tuple[str, int]]:
    """Clusters per power-of-two size range: ``1``, ``2-3``, ``4-7``, ... (empty clusters apart)."""
    nonempty = size[size > 0]
    if not len(nonempty):
        return []
    bins = np.floor(np.log2(nonempty)).astype(np.int64)
    counts = np.bincount(bins)
    return [(str(2**b) if b == 0 else f"{2**b}-{2 ** (b + 1) - 1}", int(n)) for b, n in enumerate(counts)]


def _cluster_members(view: RunView, clusters: list[int]) -> dict[int, list[dict[str, Any]]]:
    wanted = pa.array(clusters, pa.int64())
    found: dict[int, list[dict[str, Any]]] = {}

    def enough() -> bool:
        return all(len(found.get(c, [])) >= IMAGES_PER_CLUSTER for c in clusters)

    def where(t):
        return pc.and_(
            pc.equal(t["status"], tables.SUCCESS),
            pc.is_in(t["cluster"], value_set=wanted),
        )

    for t in view.scan("cluster", ["key", "status", "cluster", "similarity"], where, enough):
        for r in t.to_pylist():
            found.setdefault(r["cluster"], []).append(r)
    return {c: sorted(rows, key=lambda r: -(r["similarity"] or 0))[:IMAGES_PER_CLUSTER] for c, rows in found.items()}


def retrieval_section(view: RunView, thumbs: Thumbnails) -> str:
    from curation.stages.retrieve import io as retrieve_io

    if not view.has("retrieve"):
        return '<p class="muted">the retrieve stage has not run</p>'
    step_dir = view.ctx("retrieve").step_dir("search")
    selected = [retrieve_io.selection_path(step_dir, p) for p in view.partitions("retrieve", shuffled=False)]
    columns = ["key", "dataset", "mode", "query_dataset", "query_key", "similarity", "rank", "cluster"]
    everything = _selection(selected, columns)
    out = []
    for entry in view.section("retrieve").datasets:
        if entry.mode == "as_is":
            continue
        rows = everything.filter(pc.equal(everything["dataset"], entry.name))
        out.append(
            f"<h3>{h.esc(entry.name)} <span class=muted>({entry.mode} mode, {rows.num_rows:,} selected)</span></h3>"
        )
        out.append(_by_query(view, rows, thumbs) if entry.mode == "sample" else _by_cluster(view, rows, thumbs))
    return "".join(out) or '<p class="muted">no retrieval entry searches the pool</p>'


def _selection(paths, columns: list[str]) -> pa.Table:
    """Every selection row (the selection holds only retrieved images: small next to the pool)."""
    parts = [tables.read_parquet(p, columns) for p in paths if p.exists()]
    if not parts:
        return pa.table({c: pa.array([], pa.string()) for c in columns})
    return pa.concat_tables(parts)


def _by_query(view: RunView, rows: pa.Table, thumbs: Thumbnails) -> str:
    queries = sorted(pc.unique(rows["query_key"].drop_null()).to_pylist())
    if not queries:
        return '<p class="muted">nothing selected</p>'
    picked = sorted(view.rng.choice(queries, size=min(QUERIES_SHOWN, len(queries)), replace=False).tolist())
    out = []
    for q in picked:
        hits = rows.filter(pc.equal(rows["query_key"], q)).to_pylist()
        hits.sort(key=lambda r: r["rank"])
        figures = [
            h.figure(thumbs.curated(hits[0]["query_dataset"], q), f"query {q}", "query"),
            '<span class="arrow">&rarr;</span>',
        ]
        figures += [
            h.figure(thumbs.pool(r["key"]), f"#{r['rank'] + 1} {r['key']} sim {r['similarity']:.3f}")
            for r in hits[:NEIGHBOURS_SHOWN]
        ]
        out.append(f'<div class="group">{h.row(figures)}</div>')
    return "".join(out)


def _by_cluster(view: RunView, rows: pa.Table, thumbs: Thumbnails) -> str:
    clusters = sorted(pc.unique(rows["cluster"].drop_null()).to_pylist())
    if not clusters:
        return '<p class="muted">no cluster qualified</p>'
    picked = sorted(view.rng.choice(clusters, size=min(QUERIES_SHOWN, len(clusters)), replace=False).tolist())
    out = []
    for c in picked:
        hits = rows.filter(pc.equal(rows["cluster"], c)).to_pylist()
        queries = sorted({(r["query_dataset"], r["query_key"]) for r in hits if r["query_key"]})
        figures = [h.figure(thumbs.curated(d, q), f"query {q}", "query") for d, q in queries[:NEIGHBOURS_SHOWN]]
        figures.append('<span class="arrow">&rarr;</span>')
        figures += [
            h.figure(thumbs.pool(r["key"]), f"{r['key']} sim {r['similarity']:.3f}")
            for r in sorted(hits, key=lambda r: r["rank"])[:NEIGHBOURS_SHOWN]
        ]
        out.append(
            f'<div class="group"><b>cluster {c}</b> <span class=muted>({len(hits)} selected, '
            f"{len(queries)} queries)</span>{h.row(figures)}</div>"
        )
    return "".join(out)


def composition_section(view: RunView) -> str:
    """Planned against written images per retrieval entry, like the paper's Table 15."""
    from curation.composition import plan_rows

    if view.section("retrieve") is None:
        return '<p class="muted">the pipeline has no retrieve section</p>'
    done = view.ctx("shard").step_dir("manifest") / "_SUCCESS.json"
    actual = read_json(done).get("composition", {}) if done.exists() else {}
    rows, total_plan, total_actual = [], 0, 0
    for r in plan_rows(view.config):
        got = actual.get(r.name)
        share = h.Raw(_share_bar(got, r.final)) if got is not None and r.final else "-"
        final = "-" if r.final is None else (f"<={r.final:,}" if r.upper_bound else f"{r.final:,}")
        rows.append((r.task, r.title, r.images, r.mode, r.retrieved, final, got, share))
        total_plan += r.final or 0
        total_actual += got or 0
    rows.append(("", "Total", None, "", None, f"{total_plan:,}", total_actual, ""))
    note = "" if actual else '<p class="muted">the shard stage has not written yet: planned numbers only</p>'
    return note + h.table(
        [
            "Task",
            "Dataset",
            "Images",
            "Retrieval",
            "Retrieved (plan)",
            "Final (plan)",
            "Final (written)",
            "written / plan",
        ],
        rows,
        numeric=[2, 4, 5, 6],
    )


def _share_bar(got: int, planned: int) -> str:
    ratio = got / planned
    w = min(ratio, 1.5) / 1.5 * 120
    colour = h.SUCCESS_COLOUR if ratio >= 0.9 else "#ef6c00"
    return (
        f'<svg width="170" height="14"><rect width="{w:.1f}" height="12" fill="{colour}"/>'
        f'<line x1="80" x2="80" y1="0" y2="14" stroke="#333"/><text x="124" y="11">{ratio:.0%}</text></svg>'
    )
