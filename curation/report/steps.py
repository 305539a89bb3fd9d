"""Report section: time, memory and placement of every step, with a timeline."""

from __future__ import annotations

from curation.report import html as h
from curation.report.run import RunView
from curation.runner.stepstats import StepState, bytes_text, duration_text, run_states


def steps_section(view: RunView) -> str:
    states = run_states(view.run_dir, view.config, view.stages)
    rows = [
        (
            f"{s.stage}/{s.step}",
            s.kind,
            s.state,
            _parts(s),
            duration_text(s.wall_s),
            duration_text(s.work_s),
            bytes_text(s.peak_rss_bytes),
            _nodes(s),
        )
        for s in states
    ]
    table = h.table(
        ["step", "kind", "state", "partitions", "wall time", "worker time", "peak memory (RSS)", "placement"],
        rows,
        numeric=[3, 4, 5, 6],
    )
    note = (
        ""
        if any(s.peak_rss_bytes for s in states)
        else '<p class="muted">this run\'s stats record no peak memory or placement</p>'
    )
    return "<h3>Timeline (wall clock from the first step's start)</h3>" + timeline(states) + table + note


def _parts(s: StepState) -> str:
    return f"{s.partitions_done}/{s.partitions_total if s.partitions_total is not None else '?'}"


def _nodes(s: StepState) -> str:
    if not s.nodes:
        return "-"
    if s.kind == "global":
        return ", ".join(s.nodes)
    return ", ".join(f"{node}: {n} partitions" for node, n in sorted(s.nodes.items()))


def timeline(states: list[StepState], width: int = 760) -> str:
    """A Gantt chart of the steps that started: one bar from first start to last finish."""
    timed = [(s, s.started, s.finished) for s in states if s.started is not None and s.finished is not None]
    if not timed:
        return '<p class="muted">no step has finished yet</p>'
    t0 = min(started for _, started, _ in timed)
    span = max(finished for _, _, finished in timed) - t0 or 1.0
    label_w, bar_h, gap = 150, 14, 5
    scale = (width - label_w - 70) / span
    out = []
    for i, (s, started, finished) in enumerate(timed):
        y = i * (bar_h + gap)
        x = label_w + (started - t0) * scale
        w = max(1.0, (finished - started) * scale)
        colour = "#1565c0" if s.kind == "map" else "#6a1b9a"
        out.append(
            f'<text x="0" y="{y + 11}">{h.esc(s.stage)}/{h.esc(s.step)}</text>'
            f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{colour}">'
            f"<title>{h.esc(s.step)}: {duration_text(s.wall_s)}</title></rect>"
            f'<text x="{x + w + 4:.1f}" y="{y + 11}">{duration_text(s.wall_s)}</text>'
        )
    legend = (
        '<p class="legend"><span><i style="background:#1565c0"></i>map step</span>'
        '<span><i style="background:#6a1b9a"></i>global step</span></p>'
    )
    return legend + f'<svg width="{width}" height="{len(timed) * (bar_h + gap)}">{"".join(out)}</svg>'
