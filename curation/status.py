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
from curation.stages.base import GlobalStep, StageContext, step_done
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
        return f"{step.name:<10} global  {'done' if step_done(step_dir) else 'pending'}"
    try:
        planned = step.partitions()
    except Exception:  # its input is not there yet
        planned = []
    done = sum(partition_complete(step_dir, p) for p in planned)
    summary = summarize(step_dir)
    counts = ", ".join(f"{k}={v}" for k, v in summary["counts"].items())
    total = len(planned) if planned else "?"
    return f"{step.name:<10} {done}/{total} partitions  {summary['rows']} rows  {counts}"
