"""Runs the stages of a pipeline, in order, resumably, on a backend.

The driver is the same for every backend. Before the backend starts it
checks the config, the run directory and the selection (:func:`preflight`),
then verifies every stage against its completion markers and drops the
markers of whatever is damaged or derives from damaged work
(:mod:`curation.runner.verify`). It then plans each step's pending
partitions (those without a valid completion marker), hands them to the
backend, and records each finished stage with ``_SUCCESS.json``. Rerunning
an intact finished run does no work; rerunning after a crash, or after
files were lost, redoes only what did not commit or was lost, and what was
derived from it.
"""

from __future__ import annotations

import logging
import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from curation import config as cfg
from curation.atomic import read_json, write_json
from curation.errors import ConfigError, RunError
from curation.layout import STEP_DONE, files_dir, stage_dir, step_done
from curation.runner.partition import partition_complete
from curation.runner.progress import Progress
from curation.runner.rundir import RunLock, changed_sections, save_config
from curation.runner.stepstats import progress_path
from curation.runner.verify import StageCheck, inspect_run, repair
from curation.stages.base import GlobalStep, MapStep, Resources, StageContext, Timer
from curation.stages.registry import get_stage, stage_context

log = logging.getLogger("curation")


@dataclass
class Failure:
    stage: str
    step: str
    partition: int | None
    error: str
    # Why the last attempt failed: "error" (the step raised), "memory" (the
    # worker was killed for memory), "died" (worker, node or object lost).
    cause: str = "error"


class Backend(Protocol):
    def start(self) -> None:
        """Connect to what runs the work (Ray); called once every check has passed."""

    def run_map(self, ctx: StageContext, step: MapStep, pending: list[int], progress: Progress) -> list[Failure]: ...

    def run_global(self, ctx: StageContext, step: GlobalStep, progress: Progress) -> Failure | None: ...

    def resolve(self, ctx: StageContext, label: str, resources: Resources) -> Any:
        """Resources resolved on the backend's cluster; ConfigError when no node can hold them."""


@dataclass
class RunReport:
    run_dir: Path
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)
    repaired: list[str] = field(default_factory=list)  # units redone because their files were damaged


def stage_complete(run_dir: Path, stage: str) -> bool:
    return (stage_dir(run_dir, stage) / STEP_DONE).exists()


def select_stages(config: cfg.PipelineBase, requested: list[str] | None) -> tuple[list[str], list[str]]:
    """The stages to run, in pipeline order, and the problems of the names asked for."""
    if not requested:
        return list(config.stages), []
    problems = []
    for name in requested:
        try:
            get_stage(name)
        except ConfigError as err:  # unknown stage, with a hint
            problems.append(str(err))
            continue
        if name not in config.stages:
            problems.append(f"stage: '{name}' is not a stage of pipeline '{config.name}' ({config.stages})")
    return [s for s in config.stages if s in requested], problems


def preflight(config: cfg.PipelineBase, requested: list[str] | None, force: bool) -> list[str]:
    """Check everything that can be checked without Ray; raise one ConfigError listing every problem.

    Stage names, each selected stage's own checks (paths, inputs, models
    probed on a dummy input), the run directory (writable, not in use, made
    with this config) and the state of the stages the selection reads.
    Stages already complete and intact are not probed: they will not run.
    Returns the selected stages.
    """
    names, problems = select_stages(config, requested)
    run_dir = Path(config.run_dir)
    problems += run_dir_problems(run_dir)
    try:
        redo = stages_to_redo(config.stages, changed_sections(run_dir, config, force))
    except RunError as err:
        problems.append(str(err))
        redo = []
    unselected = [s for s in redo if s not in names and stage_dir(run_dir, s).exists()]
    if unselected:
        problems.append(
            f"force=true: the changed config redoes stages {redo}, but stage={','.join(names)} leaves out "
            f"{unselected}; select them too (stage={','.join(s for s in config.stages if s in redo or s in names)})"
        )
    checks = {c.name: c for c in inspect_run(run_dir, config.stages)}
    for name in names:
        if name in redo or not checks[name].intact:
            problems += get_stage(name).preflight(config)
    problems += _selection_problems(run_dir, names, checks, redo)
    if len(problems) == 1:
        raise ConfigError(problems[0])
    if problems:
        raise ConfigError(
            f"{len(problems)} problems; nothing was run:\n"
            + "\n".join("  " + p.replace("\n", "\n  ") for p in problems)
        )
    return names


def _selection_problems(run_dir: Path, names: list[str], checks: dict[str, StageCheck], redo: list[str]) -> list[str]:
    """Every input of a selected stage is selected before it, or complete and intact."""
    problems = []
    for i, name in enumerate(names):
        for upstream in get_stage(name).inputs:
            if upstream in names[:i] or upstream in redo:
                continue
            check = checks.get(upstream)
            if check is None:  # not a stage of this pipeline: made by another run, taken as it is
                check = StageCheck(upstream, stage_complete(run_dir, upstream), [])
            if not check.done:
                problems.append(
                    f"stage '{name}' reads the table of '{upstream}', which is not complete in "
                    f"{run_dir}: run stage={upstream} first (or run the whole pipeline)"
                )
            elif not check.intact:
                problems.append(
                    f"stage '{name}' reads the table of '{upstream}', which must be redone in part "
                    f"({_first_problem(check)}): select it too (stage={upstream},{','.join(names)}); "
                    f"`curate verify run_dir={run_dir}` lists what"
                )
    return problems


def _first_problem(check: StageCheck) -> str:
    for step in check.steps:
        for problems in step.damaged.values():
            return problems[0]
    return "derived from work that is redone upstream"


def run(config: cfg.PipelineBase, backend: Backend, stages: list[str] | None = None, force: bool = False) -> RunReport:
    """Run the selected stages in pipeline order, resumably.

    Every problem checkable without Ray is raised first, in one ConfigError,
    before the backend starts. Then every finished stage is verified against
    its markers: what is damaged, and what derives from it, is redone.
    """
    names = preflight(config, stages, force)
    run_dir = Path(config.run_dir)
    report = RunReport(run_dir)
    with RunLock(run_dir):
        backend.start()
        check_resources(config, backend, names)
        for name in stages_to_redo(config.stages, changed_sections(run_dir, config, force)):
            if stage_dir(run_dir, name).exists():
                log.warning("config changed: redoing stage %s", name)
                shutil.rmtree(stage_dir(run_dir, name))
        report.repaired = repair(run_dir, inspect_run(run_dir, config.stages))
        save_config(run_dir, config, force)
        try:
            for name in names:
                ctx = stage_context(config, name, run_dir)
                report.stages[name] = run_stage(ctx, backend, config.runner.progress)
        finally:
            if hasattr(backend, "close"):
                backend.close()
    return report


def run_dir_problems(run_dir: Path) -> list[str]:
    """A run directory (or the directory it will be made in) must be writable and not in use."""
    existing = Path(run_dir).absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return [f"run_dir: {existing} is not a directory"]
    if not os.access(existing, os.W_OK | os.X_OK):
        return [f"run_dir: {existing} is not writable"]
    holder = RunLock.holder(run_dir)
    if holder is not None:
        return [f"run_dir: {run_dir} is in use by a running curate ({holder}); wait for it or stop it"]
    return []


def check_resources(config: cfg.PipelineBase, backend: Backend, names: list[str]) -> None:
    """Every step's requests fit a node of the cluster, before any work starts.

    With ``compute:`` and ``pool_size`` in the config, the resource plan's
    memory per worker must fit a node too.
    """
    if config.compute is not None and config.pool_size is not None:
        from curation.plan_resources import check_fits, plan_resources

        check_fits(plan_resources(config, config.compute, config.pool_size, names))
    for name in names:
        ctx = stage_context(config, name)
        for step_cls in get_stage(name).steps:
            for label, resources in step_cls(ctx).requests():
                backend.resolve(ctx, label, resources)


def stages_to_redo(stages: list[str], changed: list[str]) -> list[str]:
    """Every stage from the first whose config changed on.

    A change of a run-wide key (seed, stage list) redoes every stage.
    """
    hit = [i for i, name in enumerate(stages) if name in changed]
    if any(key not in stages for key in changed):
        hit.append(0)
    return stages[min(hit) :] if hit else []


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
    step_dir = ctx.step_dir(step.name)
    if isinstance(step, GlobalStep):
        if step_done(step_dir):
            return []
        log.info("%s: running (global)", label)
        with _progress(label, 0, "step", show, step_dir, "global") as progress:
            failure = backend.run_global(ctx, step, progress)
        return [failure] if failure else []
    partitions = step.partitions()
    pending = [p for p in partitions if not partition_complete(step_dir, p)]
    if not pending:
        return []
    log.info("%s: %d of %d partitions to do", label, len(pending), len(partitions))
    total = sum(step.num_rows(p) for p in pending)
    with _progress(label, total, "sample", show, step_dir, "map") as progress:
        return backend.run_map(ctx, step, pending, progress)


@contextmanager
def _progress(label: str, total: int, unit: str, show: bool, step_dir: Path, kind: str):
    """A step's :class:`Progress`, with its progress file, closed however the step ends."""
    state_file = progress_path(step_dir, kind)
    state_file.parent.mkdir(parents=True, exist_ok=True)
    progress = Progress(label, total, unit, enabled=show, state_file=state_file, kind=kind)
    try:
        yield progress
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


# The likely fix, by why the last attempt of a unit failed (Failure.cause).
FIXES = {
    "memory": "likely fix: the worker ran out of memory: lower the stage's batch size, or give each worker more "
    "memory (fewer workers per node)",
    "died": "likely fix: a worker, node or object was lost: check that node's logs and memory",
}


def _failure_message(ctx: StageContext, failures: list[Failure]) -> str:
    """One line: the stage, each failed step and partition with its error, the likely fix, how to resume."""
    units = []
    for f in failures[:3]:
        where = f"partition {f.partition}" if f.partition is not None else "global step"
        units.append(f"{f.step} {where}: {' '.join(f.error.split())}")
    more = f" (and {len(failures) - 3} more)" if len(failures) > 3 else ""
    fix = next((FIXES[f.cause] for f in failures if f.cause in FIXES), "")
    return (
        f"stage '{ctx.stage}' failed after retries: {'; '.join(units)}{more}; "
        + (f"{fix}; " if fix else "")
        + f"completed work is kept in {ctx.run_dir}: rerun the same command to resume"
    )
