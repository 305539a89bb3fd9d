"""Shared helpers for runner tests: a pipeline of the sample stages."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

PLUGIN = "tests.runner.sample_stages"


def sample_pipeline(run_dir: Path, **numbers) -> dict:
    return {
        "name": "sample",
        "run_dir": str(run_dir),
        "stages": ["numbers", "parity"],
        "plugins": [PLUGIN],
        "ray": {"num_cpus": 2, "dashboard": False},
        "numbers": {"partitions": 4, "rows": 10, **numbers},
        "parity": {},
    }


def read_tables(run_dir: Path) -> dict[str, list[dict]]:
    """Every partition table of a run, as rows, by relative path."""
    out = {}
    for path in sorted(Path(run_dir, "stages").rglob("part-*.parquet")):
        out[str(path.relative_to(run_dir))] = pq.read_table(path).to_pylist()
    return out
