"""``curate status``: where each step of a run directory stands, from its files alone.

It reads the resolved config, the completion markers and the progress file
of the running step (:mod:`curation.runner.stepstats`), so it works while a
run is in progress (from another shell or node), after a crash, and without
Ray. Per step: done / running / partial / pending, partitions, rows per
status, wall time, peak memory and where it ran; for the running step its
progress, rate and ETA.
"""

from __future__ import annotations

import time
from pathlib import Path

import yaml

from curation import config as cfg
from curation.errors import RunError
from curation.runner.stepstats import StepState, bytes_text, duration_text, run_active, run_states


def format_status(run_dir: Path) -> str:
    config_file = run_dir / "config.yaml"
    if not config_file.exists():
        raise RunError(f"{run_dir}: not a run directory (no config.yaml)")
    data = yaml.safe_load(config_file.read_text())
    config = cfg.validate(data)
    states = run_states(run_dir, config, list(config.stages))
    active = run_active(run_dir) or any(s.state == "running" for s in states)
    lines = [
        f"run {run_dir} (pipeline {config.name}, config {cfg.content_hash(config)}): "
        f"{'running' if active else 'not running'}"
    ]
    for name in config.stages:
        steps = [s for s in states if s.stage == name]
        timed = [(s.started, s.finished) for s in steps if s.started is not None and s.finished is not None]
        took = max(finished for _, finished in timed) - min(started for started, _ in timed) if timed else None
        lines.append(f"  {name}: {_stage_state(steps)}" + (f" ({duration_text(took)})" if took is not None else ""))
        lines += ["    " + step_line(s) for s in steps]
    return "\n".join(lines)


def _stage_state(steps: list[StepState]) -> str:
    if all(s.state == "done" for s in steps):
        return "complete"
    if any(s.state == "running" for s in steps):
        return "running"
    if any(s.state in ("done", "partial") for s in steps):
        return "partial (not running)"
    return "pending"


def step_line(s: StepState) -> str:
    total = s.partitions_total if s.partitions_total is not None else "?"
    parts = [f"{s.step:<10} {s.kind:<6} {s.state:<8}"]
    if s.kind == "map":
        parts.append(f"{s.partitions_done}/{total} partitions  {s.rows} rows")
    if s.state == "running" and s.progress:
        parts.append(_live(s.progress))
    elif s.wall_s is not None:
        parts.append(f"took {duration_text(s.wall_s)}")
    if s.peak_rss_bytes:
        parts.append(f"peak {bytes_text(s.peak_rss_bytes)}")
    if s.nodes:
        parts.append("on " + ", ".join(sorted(s.nodes)))
    if s.counts:
        parts.append(", ".join(f"{k}={v}" for k, v in s.counts.items()))
    return "  ".join(parts)


def _live(progress: dict) -> str:
    """``3/5 (60%), 1.2/s, elapsed 12s, ETA 8s`` from a step's progress file."""
    done, total, unit = progress.get("done", 0), progress.get("total"), progress.get("unit", "")
    share = f" ({done / total:.0%})" if total else ""
    elapsed = time.time() - progress.get("started", time.time())
    eta = progress.get("eta_s")
    return (
        f"{done:,}/{total:,}{share} {unit}s" if total else f"{done:,} {unit}s"
    ) + f", {progress.get('rate', 0):.1f}/s, elapsed {duration_text(elapsed)}, ETA {duration_text(eta)}"
