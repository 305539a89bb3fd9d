"""Where each step of a run stands, from its files alone: for ``curate status`` and the report.

A map step is summed over its partitions' stats JSON, a global step read from
its ``_SUCCESS.json``; a step in progress also has ``_PROGRESS.json``, which
the driver rewrites every few seconds (done, total, rate, ETA), so that a
second process can watch a run without Ray.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curation.atomic import read_json
from curation.layout import PROGRESS_FILE, STEP_DONE, files_dir
from curation.stages.base import GlobalStep, StageContext


def progress_path(step_dir: Path, kind: str) -> Path:
    """A running step's progress file: beside a map step's markers, in a global step's directory."""
    return (files_dir(step_dir) if kind == "map" else step_dir) / PROGRESS_FILE


STALE_S = 30.0  # a progress file not rewritten for this long was left by a run that stopped
LOCK_FILE = ".lock"


@dataclass
class StepState:
    stage: str
    step: str
    kind: str  # map | global
    state: str = "pending"  # pending | running | done | partial (some partitions, nothing running)
    partitions_done: int = 0
    partitions_total: int | None = None
    rows: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    started: float | None = None
    finished: float | None = None
    work_s: float = 0.0  # summed over partitions (worker-seconds)
    peak_rss_bytes: int | None = None
    nodes: dict[str, int] = field(default_factory=dict)  # node -> partitions (or 1 for a global step)
    progress: dict[str, Any] | None = None  # the live _PROGRESS.json while running

    @property
    def wall_s(self) -> float | None:
        if self.started is None or self.finished is None:
            return None
        return self.finished - self.started


def run_active(run_dir: Path) -> bool:
    """Whether a process holds the run's lock: its pid is written there while it runs (this host only)."""
    lock = Path(run_dir) / LOCK_FILE
    try:
        pid = int(lock.read_text().split()[1])
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        return False
    return True


def step_state(ctx: StageContext, step_cls, active: bool) -> StepState:
    step = step_cls(ctx)
    step_dir = ctx.step_dir(step.name)
    kind = "global" if issubclass(step_cls, GlobalStep) else "map"
    out = StepState(ctx.stage, step.name, kind)
    if kind == "global":
        done = step_dir / STEP_DONE
        if done.exists():
            stats = read_json(done)
            out.state, out.partitions_done, out.partitions_total = "done", 1, 1
            _add_usage(out, stats)
    else:
        _add_partitions(out, step, step_dir)
    live = _live_progress(progress_path(step_dir, kind), active) if out.state != "done" else None
    if live is not None:
        out.progress, out.state = live, "running"
    elif out.state == "pending" and out.partitions_done:
        out.state = "partial"
    return out


def _live_progress(path: Path, active: bool) -> dict[str, Any] | None:
    """The progress file of a running step: the run's process is alive here, or the file is fresh.

    The driver rewrites it every few seconds, so a fresh file also tells a
    run driven from another node; a stale one was left by a crash.
    """
    try:
        state = read_json(path)
    except (OSError, ValueError):  # absent, or being replaced
        return None
    if active or time.time() - state.get("updated", 0) < STALE_S:
        return state
    return None


def _add_partitions(out: StepState, step, step_dir: Path) -> None:
    from curation.markers import marker_path
    from curation.runner.partition import partition_complete

    try:
        planned = step.partitions()
    except Exception:  # its input is not there yet
        planned = []
    out.partitions_total = len(planned) if planned else None
    for p in planned:
        if not partition_complete(step_dir, p):
            continue
        stats = read_json(marker_path(step_dir, p))
        out.partitions_done += 1
        out.rows += stats.get("rows", 0)
        for status, n in stats.get("counts", {}).items():
            out.counts[status] = out.counts.get(status, 0) + n
        _add_usage(out, stats)
    if planned and out.partitions_done == len(planned):
        out.state = "done"


def _add_usage(out: StepState, stats: dict[str, Any]) -> None:
    if "started" in stats:
        out.started = stats["started"] if out.started is None else min(out.started, stats["started"])
    if "finished" in stats:
        out.finished = stats["finished"] if out.finished is None else max(out.finished, stats["finished"])
    out.work_s += stats.get("duration_s", 0.0)
    if stats.get("peak_rss_bytes") is not None:
        out.peak_rss_bytes = max(out.peak_rss_bytes or 0, int(stats["peak_rss_bytes"]))
    node = placement_text(stats.get("placement"))
    if node:
        out.nodes[node] = out.nodes.get(node, 0) + 1


def placement_text(placement: Any) -> str:
    """``10.0.0.5 (4 CPU, 1 GPU)`` from a stats JSON's ``placement``; empty when absent."""
    if not placement:
        return ""
    if not isinstance(placement, dict):
        return str(placement)
    where = placement.get("node_ip") or placement.get("node_id") or "?"
    parts = [f"{placement[k]:g} {label}" for k, label in (("num_cpus", "CPU"), ("num_gpus", "GPU")) if placement.get(k)]
    return f"{where} ({', '.join(parts)})" if parts else str(where)


def run_states(run_dir: Path, config: Any, stages: list[str]) -> list[StepState]:
    """Every step of the given stages (of the validated ``config``), in pipeline order."""
    from curation.stages.registry import get_stage, stage_context

    active = run_active(run_dir)
    return [
        step_state(stage_context(config, name, run_dir), step_cls, active)
        for name in stages
        for step_cls in get_stage(name).steps
    ]


def duration_text(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def bytes_text(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size} B"
