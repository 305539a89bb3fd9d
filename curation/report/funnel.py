"""Report sections: the funnel (rows per status per stage) and drop reasons with examples."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from curation import tables
from curation.atomic import read_json
from curation.layout import STEP_DONE, stage_dir, step_dir
from curation.report import html as h
from curation.report.run import RunView
from curation.report.thumbs import Thumbnails
from curation.runner.driver import summarize
from curation.runner.metrics import status_family

EXAMPLES_PER_REASON = 6


def stage_counts(view: RunView, stage: str) -> dict[str, int]:
    """Rows per status of a stage, from its ``_SUCCESS.json`` or, while running, its partitions' stats."""
    done = stage_dir(view.run_dir, stage) / STEP_DONE
    if done.exists():
        return read_json(done).get("counts", {})
    return summarize(view.ctx(stage).table_dir(stage))["counts"]


def funnel_section(view: RunView) -> str:
    counts = {stage: stage_counts(view, stage) for stage in view.stages}
    families: dict[str, dict[str, int]] = {}
    for stage, by_status in counts.items():
        fam: dict[str, int] = {}
        for status, n in by_status.items():
            fam[status_family(status)] = fam.get(status_family(status), 0) + n
        families[stage] = fam
    names = sorted({f for fam in families.values() for f in fam}, key=lambda f: (f != tables.SUCCESS, f))
    colour = h.colours(names)
    bars = [(stage, {n: families[stage][n] for n in names if families[stage].get(n)}) for stage in view.stages]
    rows = [(stage, *(families[stage].get(n, 0) for n in names)) for stage in view.stages]
    out = [
        h.legend(colour),
        h.stacked_bars(bars, colour),
        h.table(["stage", *names], rows, numeric=range(1, len(names) + 1)),
    ]
    out.append(_dedup_funnel(view))
    return "".join(out)


def _dedup_funnel(view: RunView) -> str:
    """The dedup graph's own funnel (input, after the PCA hash, after copy and relative dedup), if any."""
    from curation.stages.dedup.stage import FUNNEL_FILE

    path = step_dir(view.run_dir, "dedup", "graph") / FUNNEL_FILE
    if not path.exists():
        return ""
    funnel = read_json(path)
    order = ["input", "after_hash", "after_self_dedup", "after_relative_dedup"]
    bars = [(name.replace("after_", ""), funnel[name]) for name in order if name in funnel]
    return "<h3>Dedup funnel (images alive after each step)</h3>" + h.bar_chart(bars, width=380)


def reasons_section(view: RunView, thumbs: Thumbnails) -> str:
    """Every drop status so far with its count, the stage that dropped it, and sampled examples."""
    last = next((s for s in reversed(view.stages) if view.has(s)), None)  # the furthest stage with a table
    if last is None:
        return '<p class="muted">no stage has committed a partition yet</p>'
    counts = {s: n for s, n in stage_counts(view, last).items() if s != tables.SUCCESS}
    if not counts:
        return '<p class="muted">no sample was dropped</p>'
    examples = _examples(view, last, counts)
    urls = _download_columns(view, [r["key"] for rows in examples.values() for r in rows])
    out = [
        h.table(
            ["status", "dropped by", "rows"],
            [
                (s, (examples.get(s) or [{}])[0].get("dropped_by", ""), n)
                for s, n in sorted(counts.items(), key=lambda kv: -kv[1])
            ],
            numeric=[2],
        )
    ]
    for status, n in sorted(counts.items(), key=lambda kv: -kv[1]):
        figures = []
        for r in examples.get(status, []):
            info = urls.get(r["key"], {})
            caption = " ".join(str(v) for v in (r["key"], r.get("error") or "", info.get("url") or "") if v)
            if info.get("duplicate_of"):  # an exact copy: its bytes were not stored, its original was
                caption += f" (original {info['duplicate_of']}, shown)"
            shown = r["key"] if info.get("stored") else info.get("duplicate_of")
            figures.append(h.figure(thumbs.pool(shown) if shown else None, caption, "dropped"))
        out.append(f"<h3>{h.esc(status)} <span class=muted>({n:,} rows)</span></h3>{h.row(figures)}")
    return "".join(out)


def _examples(view: RunView, stage: str, counts: dict[str, int]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}

    def enough() -> bool:
        return all(len(found.get(s, [])) >= min(n, EXAMPLES_PER_REASON) for s, n in counts.items())

    dropped = lambda t: pc.not_equal(t["status"], tables.SUCCESS)  # noqa: E731
    for part in view.scan(stage, ["key", "status", "dropped_by", "error"], dropped, enough):
        for r in part.to_pylist():
            bucket = found.setdefault(r["status"], [])
            if len(bucket) < EXAMPLES_PER_REASON:
                bucket.append(r)
    return found


def _download_columns(view: RunView, keys: list[str]) -> dict[str, dict[str, Any]]:
    """URL of each key, and whether its image was stored (only the partitions these keys are in)."""
    if "download" not in view.stages or not keys:
        return {}
    out: dict[str, dict[str, Any]] = {}
    wanted = pa.array(keys, pa.string())
    for p in sorted({tables.key_partition(k) for k in keys}):
        t = view.read(
            "download", p, ["key", "url", "status", "duplicate_of"], lambda t: pc.is_in(t["key"], value_set=wanted)
        )
        for r in t.to_pylist():
            out[r["key"]] = {
                "url": r.get("url"),
                "stored": r["status"] == tables.SUCCESS,
                "duplicate_of": r.get("duplicate_of"),
            }
    return out
