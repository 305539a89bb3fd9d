"""The run directory's layout: where every stage, step and partition file lives.

Every path is relative to the run root, so that a run directory can be moved
or copied as a whole::

    <run_dir>/stages/<stage>/<step>/part-NNNNNN.parquet   a map step's table parts (nothing else)
    <run_dir>/stages/<stage>/<step>.files/                its markers (part-NNNNNN.stats.json),
                                                          side files (tars, arrays) and temporaries
    <run_dir>/stages/<stage>/<step>/_SUCCESS.json         a global step's (or a finished map step's) marker

A map step's directory holds its Parquet parts and nothing else, so that
pyarrow, pandas, DuckDB and Polars open it as one dataset.
"""

from __future__ import annotations

from pathlib import Path

from curation.tables import partition_name

STAGES_DIR = "stages"
STEP_DONE = "_SUCCESS.json"
# A running step's live progress (a global step's directory, a map step's files directory).
PROGRESS_FILE = "_PROGRESS.json"
FILES_SUFFIX = ".files"
STATS_SUFFIX = "stats.json"
# (stage, step) whose side files are the pool's images: one tar per partition.
IMAGES_STEP = ("download", "fetch")


def stage_dir(run_dir: Path | str, stage: str) -> Path:
    return Path(run_dir) / STAGES_DIR / stage


def step_dir(run_dir: Path | str, stage: str, step: str) -> Path:
    return stage_dir(run_dir, stage) / step


def files_dir(step_dir: Path) -> Path:
    """A map step's markers, side files and temporaries: the sibling ``<step>.files/``."""
    return step_dir.with_name(step_dir.name + FILES_SUFFIX)


def part_path(step_dir: Path, name: str) -> Path:
    """Where a map step's file ``name`` (``part-NNNNNN.<suffix>``) lives.

    Only the table parts (``part-NNNNNN.parquet``) live in the step directory:
    a side file is in the files directory even when it is Parquet too
    (``part-NNNNNN.samples.parquet``), so that the table folder reads as one
    dataset.
    """
    suffix = name.partition(".")[2]
    return step_dir / name if suffix == "parquet" else files_dir(step_dir) / name


def partition_path(step_dir: Path, partition: int, suffix: str) -> Path:
    return part_path(step_dir, f"{partition_name(partition)}.{suffix}")


def committed_partitions(step_dir: Path) -> list[int]:
    """Partitions whose stats JSON (the completion marker) exists."""
    markers = files_dir(step_dir)
    if not markers.exists():
        return []
    out = []
    for marker in markers.glob(f"part-*.{STATS_SUFFIX}"):
        out.append(int(marker.name[len("part-") :].split(".")[0]))
    return sorted(out)


def step_done(step_dir: Path) -> bool:
    return (step_dir / STEP_DONE).exists()
