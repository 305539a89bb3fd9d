"""Completion markers and the files they list: where they are, and whether those files are intact.

A map partition's marker ``<step>.files/part-NNNNNN.stats.json`` lists
``files`` (name -> bytes, placed by :func:`~curation.layout.part_path`), their
``sha256``, and ``outputs`` written outside the step directory (relative to
the run directory); a global step's ``_SUCCESS.json`` lists its files relative
to the run directory. A file is intact when it exists with its listed size:
one ``stat`` call. File-level checks only: the runner commits and checks
markers with them (:mod:`curation.runner.verify` works out what a rerun
redoes), and readers of a step's files (:mod:`curation.imagestore`) check the
file they open.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from curation.atomic import read_json
from curation.layout import STATS_SUFFIX, part_path, partition_path


def marker_path(step_dir: Path, partition: int) -> Path:
    return partition_path(step_dir, partition, STATS_SUFFIX)


def in_step(step_dir: Path) -> Callable[[str], Path]:
    """Where the files a map partition's marker lists live."""
    return lambda name: part_path(step_dir, name)


def in_run(run_dir: Path) -> Callable[[str], Path]:
    """Where the files a global step's marker lists live (relative to the run directory)."""
    return lambda name: run_dir / name


def sha256_file(path: Path) -> str:
    from curation.manifest import sha256_stream

    with open(path, "rb") as f:
        return sha256_stream(f)


def file_problems(
    locate: Callable[[str], Path], sizes: dict[str, int], sums: dict[str, str] | None = None, checksums: bool = False
) -> list[str]:
    """What is wrong with the files a marker lists (``locate`` maps a listed name to its path)."""
    problems = []
    for name, size in sizes.items():
        path = locate(name)
        try:
            actual = path.stat().st_size
        except FileNotFoundError:
            problems.append(f"{path} is missing")
            continue
        if actual != size:
            problems.append(f"{path} has {actual} bytes, its marker lists {size}")
        elif checksums and sums and name in sums and sha256_file(path) != sums[name]:
            problems.append(f"{path}: sha256 differs from the one its marker lists")
    return problems


def marker_problems(
    marker: Path, locate: Callable[[str], Path], checksums: bool = False, outputs: Callable[[str], Path] | None = None
) -> list[str]:
    """What is wrong with a completion marker and the files it lists ([]: intact).

    A map partition's marker may also list ``outputs``: files it wrote
    outside its step directory (the final shards), found with ``outputs``.
    """
    try:
        stats = read_json(marker)
    except FileNotFoundError:
        return [f"{marker} is missing"]
    except (ValueError, OSError) as err:
        return [f"{marker} cannot be read ({type(err).__name__})"]
    problems = file_problems(locate, stats.get("files", {}), stats.get("sha256"), checksums)
    if outputs is not None:
        problems += file_problems(outputs, stats.get("outputs", {}), stats.get("outputs_sha256"), checksums)
    return problems


def outputs_of(step_dir: Path) -> Callable[[str], Path]:
    """Where the ``outputs`` a map partition's marker lists live: relative to the run directory
    (``<run_dir>/stages/<stage>/<step>``)."""
    return in_run(Path(step_dir).parents[2])


def listed_file_problems(step_dir: Path, partition: int, name: str) -> list[str]:
    """What is wrong with one file of a map partition, if its marker lists it ([] when it does not, or when
    there is no readable marker: files made by other means than the runner are taken as they are)."""
    try:
        listed = read_json(marker_path(step_dir, partition)).get("files", {})
    except (OSError, ValueError):
        return []
    return file_problems(in_step(step_dir), {name: listed[name]}) if name in listed else []
