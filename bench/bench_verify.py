"""The completion check of a finished run vs the least it can cost: one stat per file and one read per marker.

Builds a run directory of the shape a finished run leaves (two map stages with ``--partitions`` partitions and
three files each, a global step), then times, interleaved, best of ``--repeats``:

- baseline: ``os.stat`` of every listed file plus ``json.load`` of every marker (what any check must do);
- ``curation.runner.verify.inspect_run`` (what every ``curate run`` and ``curate verify`` does).

Prints both times, the ratio, and the projection per billion rows at 10,000 rows per partition.

    python bench/bench_verify.py --partitions 20000 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curation.atomic import write_json
from curation.runner.verify import inspect_run
from curation.stages.base import STEP_DONE, files_dir, part_path, partition_path
from tests.runner import sample_stages  # noqa: F401 -- registers the stages built below


def build(run_dir: Path, partitions: int) -> list[Path]:
    """Files and markers of a finished two-stage run; returns every marker."""
    markers = []
    for stage, step, suffixes in (("numbers", "make", ("parquet", "txt")), ("parity", "mark", ("parquet",))):
        step_dir = run_dir / "stages" / stage / step
        step_dir.mkdir(parents=True)
        files_dir(step_dir).mkdir()
        for p in range(partitions):
            files = {}
            for suffix in suffixes:
                path = part_path(step_dir, f"part-{p:06d}.{suffix}")
                path.write_bytes(b"x" * (100 + p % 7))
                files[path.name] = path.stat().st_size
            marker = partition_path(step_dir, p, "stats.json")
            write_json(marker, {"rows": 10000, "files": files, "sha256": {n: "0" * 64 for n in files}})
            markers.append(marker)
        write_json(run_dir / "stages" / stage / STEP_DONE, {"partitions": partitions})
    total = run_dir / "stages/parity/total"
    total.mkdir()
    (total / "total.json").write_text("{}")
    write_json(total / STEP_DONE, {"files": {"stages/parity/total/total.json": 2}})
    return markers


def baseline(run_dir: Path, markers: list[Path]) -> None:
    for marker in markers:
        for name in json.loads(marker.read_text())["files"]:
            os.stat(marker.parent / name)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--partitions", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp)
        markers = build(run_dir, args.partitions)
        best = {"baseline": float("inf"), "inspect_run": float("inf")}
        for _ in range(args.repeats):
            start = time.perf_counter()
            baseline(run_dir, markers)
            best["baseline"] = min(best["baseline"], time.perf_counter() - start)
            start = time.perf_counter()
            checks = inspect_run(run_dir, ["numbers", "parity"])
            best["inspect_run"] = min(best["inspect_run"], time.perf_counter() - start)
            assert all(c.intact for c in checks)
    files = 3 * args.partitions  # numbers: parquet + txt; parity: parquet
    print(f"{args.partitions} partitions x 2 map steps, {len(markers)} markers, {files} files")
    for name, seconds in best.items():
        print(f"{name:<12} {seconds:8.3f} s   {seconds / len(markers) * 1e6:7.1f} us per marker")
    print(f"ratio inspect_run / baseline: {best['inspect_run'] / best['baseline']:.2f}")
    per_billion = 1e9 / 10000  # partitions per billion rows at 10,000 rows per partition
    print(
        f"projected per map step per billion rows ({per_billion:.0f} partitions): "
        f"{best['inspect_run'] / len(markers) * per_billion:.1f} s (local disk; a network file system adds its "
        "per-call latency)"
    )


if __name__ == "__main__":
    main()
