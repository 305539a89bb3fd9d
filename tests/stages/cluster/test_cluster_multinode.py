"""k-means over training workers on a simulated cluster: same result for any split, bounded memory per worker.

The runs happen in their own process (``tests/stages/cluster/cluster_multinode.py``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from curation.atomic import read_json
from tests.stages.cluster.cluster_multinode import SAME_POOL, SCALED_DIM, SCALED_ROWS, WORKER
from tests.stages.cluster.test_cluster import read_assign

ROOT = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("cluster-multinode")
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    done = subprocess.run(
        [sys.executable, "-m", "tests.stages.cluster.cluster_multinode", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return out, json.loads((out / "nodes.json").read_text())


def _train(run_dir: Path) -> dict:
    return read_json(run_dir / "stages/cluster/train/_SUCCESS.json")


def test_any_split_gives_the_same_centroids_and_table(runs):
    out, nodes = runs
    ref = np.load(out / "w1/stages/cluster/train/centroids.npy")
    ref_table = [t.to_pylist() for t in read_assign(out / "w1")]
    for case in SAME_POOL:
        assert np.array_equal(np.load(out / case / "stages/cluster/train/centroids.npy"), ref), case
        assert [t.to_pylist() for t in read_assign(out / case)] == ref_table, case
    assert [len(_train(out / c)["workers"]) for c in SAME_POOL] == [1, 2, 4, 3]


def test_hierarchical_mode_over_three_workers_equals_one(runs):
    out, _ = runs
    assert [t.to_pylist() for t in read_assign(out / "hier3")] == [t.to_pylist() for t in read_assign(out / "hier1")]
    assert len(_train(out / "hier3")["workers"]) == 3


def test_helpers_run_on_the_worker_nodes_with_their_resources(runs):
    out, nodes = runs
    for case, cpus in (("w2", 1), ("w4", 0.5), ("per_node", WORKER["num_cpus"])):
        train = _train(out / case)
        assert train["placement"]["num_cpus"] == WORKER["num_cpus"]  # the step keeps a whole node
        helpers = train["workers"][1:]
        assert all(h["placement"]["num_cpus"] == cpus for h in helpers), case
        assert all(h["placement"]["node_id"] in nodes["workers"] for h in helpers)
    # One worker per node by default: the step's node and the two others.
    per_node = _train(out / "per_node")
    placed = {per_node["placement"]["node_id"], *(h["placement"]["node_id"] for h in per_node["workers"][1:])}
    assert placed == set(nodes["workers"])


def test_peak_memory_per_worker_stays_flat_when_pool_and_workers_grow_alike(runs):
    out, _ = runs
    small, large = _train(out / "mem1"), _train(out / "mem4")
    assert [w["rows"] for w in large["workers"]] == [SCALED_ROWS] * 4 == [small["workers"][0]["rows"] * 1] * 4
    peaks = [large["peak_rss_bytes"], *(w["peak_rss_bytes"] for w in large["workers"][1:])]
    whole = 3 * SCALED_ROWS * SCALED_DIM * 4  # what one process would hold more if it had the whole 4x sample
    for peak in peaks:
        assert peak - small["peak_rss_bytes"] < whole / 3, (small["peak_rss_bytes"], peaks)
