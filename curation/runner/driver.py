"""Runs the stages of a pipeline, in order, resumably, on a backend.

The driver is the same for every backend: it plans each step's pending
partitions (those without a valid completion marker), hands them to the
backend, and records each finished stage with ``_SUCCESS.json``. Rerunning
a finished run does no work; rerunning after a crash redoes only the
partitions that did not commit.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from curation import config as cfg
from curation.atomic import read_json, write_json
from curation.errors import ConfigError, RunError
from curation.runner.partition import partition_complete
from curation.runner.progress import Progress
from curation.runner.rundir import RunLock, changed_sections, save_config
from curation.stages.base import STEP_DONE, GlobalStep, MapStep, StageContext, Timer, files_dir, step_done
from curation.stages.registry import get_stage

log = logging.getLogger("curation")


@dataclass
class Failure:
    stage: str
    step: str
    partition: int | None
    error: str


class Backend(Protocol):
    def run_map(self, ctx: StageContext, step: MapStep, pending: list[int], progress: Progress) -> list[Failure]:
        ...

    def run_global(self, ctx: StageContext, step: GlobalStep) -> Failure | None:
        ...


@dataclass
class RunReport:
    run_dir: Path
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)


def stage_dir(run_dir: Path, stage: str) -> Path:
    return Path(run_dir) / "stages" / stage


def stage_complete(run_dir: Path, stage: str) -> bool:
    return (stage_dir(run_dir, stage) / STEP_DONE).exists()


def select_stages(config: cfg.PipelineBase, requested: list[str] | None) -> list[str]:
    """The stages to run, in pipeline order; ConfigError for unknown names."""
    if not requested:
        return list(config.stages)
    for name in requested:
        get_stage(name)  # unknown stage -> ConfigError with a hint
        if name not in config.stages:
            raise ConfigError(f"stage: '{name}' is not a stage of pipeline '{config.name}' ({config.stages})")
    return [s for s in config.stages if s in requested]


def check_inputs(run_dir: Path, names: list[str]) -> None:
    """Every input of a selected stage is selected before it or already complete."""
    for i, name in enumerate(names):
        for upstream in get_stage(name).inputs:
            if upstream not in names[:i] and not stage_complete(run_dir, upstream):
                raise RunError(
                    f"stage '{name}' reads the table of '{upstream}', which is not complete in {run_dir}: "
                    f"run stage={upstream} first (or run the whole pipeline)"
                )


def run(config: cfg.PipelineBase, backend: Backend, stages: list[str] | None = None,
        force: bool = False) -> RunReport:
    names = select_stages(config, stages)
    for name in names:
        get_stage(name).check(config)
    run_dir = Path(config.run_dir)
    check_inputs(run_dir, names)
    report = RunReport(run_dir)
    with RunLock(run_dir):
        redo = stages_to_redo(config.stages, changed_sections(run_dir, config, force))
        unselected = [s for s in redo if s not in names and stage_dir(run_dir, s).exists()]
        if unselected:
            raise RunError(
                f"force=true: the changed config redoes stages {redo}, but stage={','.join(names)} leaves out "
                f"{unselected}; select them too (stage={','.join(s for s in config.stages if s in redo or s in names)})"
            )
        for name in redo:
            if stage_dir(run_dir, name).exists():
                log.warning("config changed: redoing stage %s", name)
                shutil.rmtree(stage_dir(run_dir, name))
        save_config(run_dir, config, force)
        data = cfg.to_dict(config)
        for name in names:
            ctx = StageContext(run_dir, data, name)
            report.stages[name] = run_stage(ctx, backend, config.runner.progress)
    return report


def stages_to_redo(stages: list[str], changed: list[str]) -> list[str]:
    """Every stage from the first whose config changed on.

    A change of a run-wide key (seed, stage list) redoes every stage.
    """
    hit = [i for i, name in enumerate(stages) if name in changed]
    if any(key not in stages for key in changed):
        hit.append(0)
    return stages[min(hit):] if hit else []


def run_stage(ctx: StageContext, backend: Backend, show_progress: bool = True) -> dict[str, Any]:
    done = stage_dir(ctx.run_dir, ctx.stage) / STEP_DONE
    if done.exists():
        log.info("stage %s: complete, nothing to do", ctx.stage)
        return read_json(done)
    stage = get_stage(ctx.stage)
    timer = Timer()
    for step_cls in stage.steps:
        step = step_cls(ctx)
        failures = _run_step(ctx, step, backend, show_progress)
        if failures:
            raise RunError(_failure_message(ctx, failures))
    summary = {"stage": ctx.stage, **summarize(ctx.step_dir(stage.table_step)), **timer.stamp()}
    write_json(done, summary)
    log.info("stage %s: %s", ctx.stage, summary["counts"])
    return summary


def _run_step(ctx: StageContext, step: MapStep | GlobalStep, backend: Backend, show: bool) -> list[Failure]:
    label = f"{ctx.stage}/{step.name}"
    if isinstance(step, GlobalStep):
        if step_done(ctx.step_dir(step.name)):
            return []
        log.info("%s: running (global)", label)
        failure = backend.run_global(ctx, step)
        return [failure] if failure else []
    step_dir = ctx.step_dir(step.name)
    partitions = step.partitions()
    pending = [p for p in partitions if not partition_complete(step_dir, p)]
    if not pending:
        return []
    log.info("%s: %d of %d partitions to do", label, len(pending), len(partitions))
    progress = Progress(label, sum(step.num_rows(p) for p in pending), enabled=show)
    try:
        return backend.run_map(ctx, step, pending, progress)
    finally:
        progress.close()


def summarize(step_dir: Path) -> dict[str, Any]:
    """Counts by status, rows and partitions over a map step's stats files."""
    counts: dict[str, int] = {}
    rows = partitions = 0
    for marker in sorted(files_dir(step_dir).glob("part-*.stats.json")):
        stats = read_json(marker)
        partitions += 1
        rows += stats.get("rows", 0)
        for status, n in stats.get("counts", {}).items():
            counts[status] = counts.get(status, 0) + n
    return {"partitions": partitions, "rows": rows, "counts": dict(sorted(counts.items()))}


def _failure_message(ctx: StageContext, failures: list[Failure]) -> str:
    lines = [f"{len(failures)} unit(s) of stage '{ctx.stage}' failed after retries:"]
    for f in failures[:10]:
        where = f"partition {f.partition}" if f.partition is not None else "global step"
        lines.append(f"  {f.step} {where}: {f.error}")
    lines.append(f"completed work is kept in {ctx.run_dir}; rerun the same command to retry what failed")
    return "\n".join(lines)
