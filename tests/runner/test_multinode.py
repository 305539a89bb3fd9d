"""Placement on a simulated cluster: a CPU-less head and two worker nodes with (fake) GPUs.

The run happens in its own process (``tests/runner/multinode.py``), so that
its Ray cluster does not disturb the session's shared local Ray.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from curation.atomic import read_json
from curation.stages.base import files_dir
from tests.runner.multinode import WORKER

ROOT = Path(__file__).resolve().parents[2]
# Starting three Ray nodes takes tens of seconds on two cores.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, dict]:
    run_dir = tmp_path_factory.mktemp("multinode") / "run"
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    done = subprocess.run(
        [sys.executable, "-m", "tests.runner.multinode", str(run_dir)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return run_dir, json.loads((run_dir / "nodes.json").read_text())


def _placements(step_dir: Path) -> list[dict]:
    return [read_json(m) for m in sorted(files_dir(step_dir).glob("part-*.stats.json"))]


def test_map_steps_run_on_workers_with_auto_gpus(run):
    run_dir, nodes = run
    for step in ("embed/pool", "cluster/assign", "retrieve/mark"):
        stats = _placements(run_dir / "stages" / step)
        assert len(stats) == 3, step
        for s in stats:
            placement = s["placement"]
            assert placement["node_id"] in nodes["workers"] and placement["node_id"] != nodes["head"]
            assert placement["num_cpus"] == 1
            assert s["peak_rss_bytes"] > 10 * 2**20
    # device: auto asks for a GPU per worker because the nodes have GPUs; torch sees none (fake GPUs).
    for s in _placements(run_dir / "stages/embed/pool"):
        assert s["placement"]["num_gpus"] == 1
        assert s["model"]["device"] == "cpu"
    assert all(s["placement"]["num_gpus"] == 1 for s in _placements(run_dir / "stages/cluster/assign"))
    assert all(s["placement"]["num_gpus"] == 0 for s in _placements(run_dir / "stages/retrieve/mark"))


def test_global_steps_record_placement_and_k_means_takes_a_whole_node(run):
    run_dir, nodes = run
    train = read_json(run_dir / "stages/cluster/train/_SUCCESS.json")
    assert train["placement"]["node_id"] in nodes["workers"]
    assert (train["placement"]["num_cpus"], train["placement"]["num_gpus"]) == (WORKER["num_cpus"], 1)
    for step in ("embed/curated", "cluster/sizes", "retrieve/search"):
        stats = read_json(run_dir / "stages" / step / "_SUCCESS.json")
        assert stats["placement"]["node_id"] in nodes["workers"], step
        assert stats["peak_rss_bytes"] > 10 * 2**20


def test_index_shards_spread_over_the_worker_nodes(run):
    run_dir, nodes = run
    search = read_json(run_dir / "stages/retrieve/search/_SUCCESS.json")
    shards = search["shards"]
    assert len(shards) == 2  # retrieve.shards.count null: one per worker node
    assert {s["placement"]["node_id"] for s in shards} == set(nodes["workers"])
    for s in shards:
        assert s["placement"]["num_gpus"] == 1 and s["placement"]["memory"] == 2**28
    assert search["pool_candidates"] == 3 * 20 - 3 * 3  # rows with row % 7 == 3 were dropped


def test_status_shows_where_steps_ran(run):
    from curation.status import format_status

    run_dir, _ = run
    text = format_status(run_dir)
    assert "(1 CPU, 1 GPU)" in text and "peak " in text
    train = next(line for line in text.splitlines() if line.strip().startswith("train "))
    assert "global done" in train and "(2 CPU, 1 GPU)" in train
