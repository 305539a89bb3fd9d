"""Checks what a run directory's completion markers promise, and works out what a rerun redoes.

Every commit lists its files: a map partition's marker
``<step>.files/part-NNNNNN.stats.json`` lists ``files`` (name -> bytes, placed
by :func:`~curation.stages.base.part_path`) and ``sha256``; a global step's ``_SUCCESS.json`` lists
them relative to the run directory. A file is intact when it exists with its
listed size (:mod:`curation.markers`): one ``stat`` call, so checking a finished billion-row run costs
a stat per file (about 5 per partition). Checksums are compared only on
request (``curate verify checksums=true``): that reads every byte.

Derivation decides what damage spreads to:

- partition ``i`` of every map step derives from partition ``i`` of the map
  steps before it, down to the source (download) partition ``i``;
- a global step derives from everything before it, so everything after a
  global step derives from it.

A damaged, missing or uncommitted partition therefore makes partition ``i``
of every later map step stale, and every later global step, with all that
follows it. :func:`inspect_run` only reads; :func:`repair` deletes the
markers (then the files) of what must be redone, so that the normal resume
redoes exactly that.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from curation.atomic import read_json
from curation.layout import STEP_DONE, committed_partitions, part_path, stage_dir
from curation.markers import in_run, in_step, marker_path, marker_problems, outputs_of
from curation.stages.base import GlobalStep
from curation.stages.registry import get_stage

log = logging.getLogger("curation")


@dataclass
class StepCheck:
    """One step of a run directory, as its markers and files stand."""

    stage: str
    step: str
    is_global: bool
    committed: list[int] = field(default_factory=list)  # map: partitions with a marker
    done: bool = False  # global: marker present
    damaged: dict[int | None, list[str]] = field(default_factory=dict)  # partition (None: global) -> problems
    stale: list[int | None] = field(default_factory=list)  # intact, but derived from work to redo
    missing: list[int] = field(default_factory=list)  # committed upstream, never here

    @property
    def redo(self) -> list[int | None]:
        """Committed units whose marker a rerun must drop."""
        return sorted(self.damaged, key=_order) + self.stale

    @property
    def clean(self) -> bool:
        return not (self.damaged or self.stale or self.missing) and (self.done or not self.is_global)


@dataclass
class StageCheck:
    name: str
    done: bool  # _SUCCESS.json present
    steps: list[StepCheck]

    @property
    def intact(self) -> bool:
        """Marked complete, and every file its markers list is as listed."""
        return self.done and all(s.clean for s in self.steps)

    @property
    def needs_repair(self) -> bool:
        return any(s.redo for s in self.steps) or (self.done and not self.intact)


def _order(unit: int | None) -> int:
    return -1 if unit is None else unit


def inspect_run(run_dir: Path, stages: list[str], checksums: bool = False) -> list[StageCheck]:
    """Check every stage of a run directory, in pipeline order; changes nothing."""
    run_dir = Path(run_dir)
    dirty: set[int] = set()  # partitions to redo somewhere upstream
    all_dirty = False  # a global step upstream is redone or not done
    seen: set[int] = set()  # partitions committed by the map steps so far
    out = []
    for name in stages:
        stage_root = stage_dir(run_dir, name)
        done = (stage_root / STEP_DONE).exists()
        checks = []
        for i, step_cls in enumerate(get_stage(name).steps):
            step_dir = stage_root / step_cls.name
            if issubclass(step_cls, GlobalStep):
                check = _check_global(run_dir, name, step_cls.name, step_dir, checksums, all_dirty or bool(dirty))
                all_dirty = all_dirty or not check.clean
            elif not step_cls.pool_partitions:
                # Its own partitioning (a curated set's chunks): any redo there reaches every later step.
                check = _check_map(name, step_cls.name, step_dir, checksums, set(), set(), all_dirty)
                all_dirty = all_dirty or not check.clean
            else:
                expected = set(seen)
                if done and i == 0 and not get_stage(name).inputs:
                    # A finished source stage committed partitions 0..n-1 (n in its summary).
                    expected |= set(range(_summary_partitions(stage_root)))
                check = _check_map(name, step_cls.name, step_dir, checksums, expected, dirty, all_dirty)
                # A map step's problems are per partition (None, a global step's key, never occurs here).
                dirty |= {p for p in (*check.damaged, *check.stale) if p is not None} | set(check.missing)
                seen = expected | set(check.committed)
            checks.append(check)
        out.append(StageCheck(name, done, checks))
    return out


def _summary_partitions(stage_root: Path) -> int:
    try:
        return int(read_json(stage_root / STEP_DONE).get("partitions", 0))
    except (ValueError, OSError):
        return 0


def _check_map(
    stage: str, step: str, step_dir: Path, checksums: bool, expected: set[int], dirty: set[int], all_dirty: bool
) -> StepCheck:
    check = StepCheck(stage, step, False, committed_partitions(step_dir))
    for p in check.committed:
        problems = marker_problems(marker_path(step_dir, p), in_step(step_dir), checksums, outputs_of(step_dir))
        if problems:
            check.damaged[p] = problems
        elif all_dirty or p in dirty:
            check.stale.append(p)
    check.missing = sorted(expected - set(check.committed))
    return check


def _check_global(
    run_dir: Path, stage: str, step: str, step_dir: Path, checksums: bool, upstream_redone: bool
) -> StepCheck:
    marker = step_dir / STEP_DONE
    check = StepCheck(stage, step, True, done=marker.exists())
    if not check.done:
        return check
    problems = marker_problems(marker, in_run(run_dir), checksums)
    if problems:
        check.damaged[None] = problems
    elif upstream_redone:
        check.stale.append(None)
    return check


def repair(run_dir: Path, checks: list[StageCheck]) -> list[str]:
    """Drop the markers of what must be redone (stage markers first); return what was dropped.

    Markers go before files, so an interruption leaves work uncommitted,
    never a marker without its files.
    """
    run_dir = Path(run_dir)
    dropped = []
    for stage in checks:
        if stage.done and not stage.intact:
            (stage_dir(run_dir, stage.name) / STEP_DONE).unlink(missing_ok=True)
        for step in stage.steps:
            step_dir = stage_dir(run_dir, stage.name) / step.step
            for unit in step.redo:
                why = "; ".join(step.damaged.get(unit, [])) or "derived from work that is redone"
                where = f"{stage.name}/{step.step}" + ("" if unit is None else f" partition {unit}")
                log.warning("%s: redoing it: %s", where, why)
                dropped.append(where)
                if unit is None:
                    (step_dir / STEP_DONE).unlink(missing_ok=True)
                else:
                    _drop_partition(step_dir, unit)
    return dropped


def _drop_partition(step_dir: Path, partition: int) -> None:
    marker = marker_path(step_dir, partition)
    try:
        stats = read_json(marker)
    except (ValueError, OSError):
        stats = {}
    marker.unlink(missing_ok=True)
    for name in stats.get("files", {}):
        part_path(step_dir, name).unlink(missing_ok=True)
    for name in stats.get("outputs", {}):
        outputs_of(step_dir)(name).unlink(missing_ok=True)


def format_checks(run_dir: Path, checks: list[StageCheck], checksums: bool) -> str:
    """The report of ``curate verify``: one line per stage, then what a rerun would redo, and why."""
    lines = [
        f"run {run_dir}: "
        + ("sizes and sha256 checksums" if checksums else "file sizes")
        + " checked against the completion markers"
    ]
    for stage in checks:
        if stage.intact:
            state = "complete, intact"
        elif stage.done:
            state = "DAMAGED: marked complete, a rerun redoes " + _units(stage)
        elif any(s.committed or s.done for s in stage.steps):
            state = "in progress" + (f"; a rerun also redoes {_units(stage)}" if stage.needs_repair else "")
        else:
            state = "not started"
        lines.append(f"  {stage.name}: {state}")
        for step in stage.steps:
            for unit, problems in sorted(step.damaged.items(), key=lambda kv: _order(kv[0])):
                where = "global step" if unit is None else f"partition {unit}"
                lines += [f"    {step.step} {where}: {p}" for p in problems]
            if stage.done and step.missing:
                lines.append(f"    {step.step}: partitions {_short(step.missing)} are not committed")
    return "\n".join(lines)


def _units(stage: StageCheck) -> str:
    parts = []
    for step in stage.steps:
        units = [u for u in step.redo if u is not None]
        if None in step.redo or (step.is_global and not step.done):
            parts.append(step.step)
        if units or step.missing:
            parts.append(f"{step.step} partitions {_short(sorted(set(units) | set(step.missing)))}")
    return ", ".join(parts) or "nothing"


def _short(items: list[int], shown: int = 8) -> str:
    text = ",".join(str(i) for i in items[:shown])
    return text + (f",... ({len(items)} in all)" if len(items) > shown else "")


def verify_run_dir(run_dir: Path, checksums: bool = False) -> tuple[str, bool]:
    """``curate verify``: the report, and whether nothing needs redoing. Changes nothing."""
    from curation import config as cfg
    from curation.runner.rundir import read_config

    config = cfg.validate(read_config(run_dir))
    checks = inspect_run(Path(run_dir), config.stages, checksums)
    return format_checks(Path(run_dir), checks, checksums), not any(c.needs_repair for c in checks)
