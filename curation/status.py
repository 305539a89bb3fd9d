"""``curate status``: per-stage progress of a run directory, from its files alone.

It reads the resolved config and the completion markers, so it works while a
run is in progress, after a crash, and without Ray.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from curation import config as cfg
from curation.errors import RunError
from curation.runner.driver import stage_complete, summarize
from curation.runner.partition import partition_complete
from curation.atomic import read_json
from curation.stages.base import STEP_DONE, GlobalStep, StageContext, step_done
from curation.stages.registry import get_stage


def format_status(run_dir: Path) -> str:
    config_file = run_dir / "config.yaml"
    if not config_file.exists():
        raise RunError(f"{run_dir}: not a run directory (no config.yaml)")
    data = yaml.safe_load(config_file.read_text())
    config = cfg.validate(data)
    lines = [f"run {run_dir} (pipeline {config.name}, config {cfg.content_hash(config)})"]
    for name in config.stages:
        ctx = StageContext(run_dir, data, name)
        state = "complete" if stage_complete(run_dir, name) else "pending"
        lines.append(f"  {name}: {state}")
        for step_cls in get_stage(name).steps:
            lines.append("    " + _step_line(ctx, step_cls))
    return "\n".join(lines)


def _step_line(ctx: StageContext, step_cls) -> str:
    step = step_cls(ctx)
    step_dir = ctx.step_dir(step.name)
    if issubclass(step_cls, GlobalStep):
        done = step_done(step_dir)
        where = _usage([read_json(step_dir / STEP_DONE)]) if done else ""
        return f"{step.name:<10} global  {'done' if done else 'pending'}{where}"
    try:
        planned = step.partitions()
    except Exception:  # its input is not there yet
        planned = []
    done = sum(partition_complete(step_dir, p) for p in planned)
    summary = summarize(step_dir)
    counts = ", ".join(f"{k}={v}" for k, v in summary["counts"].items())
    total = len(planned) if planned else "?"
    markers = [read_json(m) for m in sorted(step_dir.glob("part-*.stats.json"))]
    return f"{step.name:<10} {done}/{total} partitions  {summary['rows']} rows  {counts}{_usage(markers)}"


def _usage(stats: list[dict]) -> str:
    """Where the work ran (nodes, CPUs/GPUs granted per worker) and its largest peak RSS."""
    placed = [s["placement"] for s in stats if s.get("placement")]
    if not placed:
        return ""
    nodes = sorted({p["node_ip"] for p in placed})
    per_worker = sorted({(p["num_cpus"], p["num_gpus"]) for p in placed})
    grants = ", ".join(f"{c:g} CPU {g:g} GPU" for c, g in per_worker)
    rss = max(s.get("peak_rss_bytes", 0) for s in stats) / 2**20
    shown = ",".join(nodes[:3]) + (f" +{len(nodes) - 3}" if len(nodes) > 3 else "")
    return f"  on {shown} ({grants}), peak RSS {rss:,.0f} MiB"
