"""The dedup graph over 1, 2 and 4 helpers: the same decisions, and the pairs and components of one
single-process search over the whole pool.

One pool of four partitions (planted byte copies, a re-encode and a downscale across partitions, a
benchmark leak) is described once; the graph and table steps are then rerun on the same features with
each helper count. The reference is what the graph step computed before it had helpers: every code in
one Hamming search (``hamming.near_pairs``) and every survivor in one flat k-NN graph (``knn.copy_graph``).
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from curation import tables
from curation.runner.local import run_stages
from tests.stages.dedup.test_dedup import _jpeg, _photo, pipeline, read_stage, write_download

pytestmark = pytest.mark.slow
KEY = tables.sample_key


@pytest.fixture(scope="module")
def described(tmp_path_factory):
    """A run whose features step is done: four partitions, and the benchmark folder."""
    root = tmp_path_factory.mktemp("workers")
    rocket, coffee = _photo("rocket"), _jpeg(_photo("coffee"))
    pool = [
        [coffee, _jpeg(_photo("chelsea")), _jpeg(rocket)],
        [_jpeg(_photo("astronaut")), _jpeg(_photo("camera")), coffee],
        [_jpeg(_photo("moon")), _jpeg(rocket.resize((rocket.width // 2, rocket.height // 2))), None],
        [_jpeg(_photo("flower"), 70), _jpeg(_photo("clock")), coffee, _jpeg(_photo("coins"))],
    ]
    bench = root / "bench"
    bench.mkdir()
    (bench / "a_flower.jpg").write_bytes(_jpeg(_photo("flower")))
    run = root / "run"
    write_download(run, pool)
    run_stages(run, _config(run, bench, 1), ["dedup"])
    return run, bench


def _config(run, bench, workers: int, **graph) -> dict:
    copy = {"copy_dedup": {"threshold": 0.8, "index": graph.pop("index")}} if "index" in graph else {}
    return pipeline(
        run,
        relative={"threshold": 0.8, "benchmarks": [{"name": "b", "kind": "folder", "path": str(bench)}]},
        graph={"workers": {"count": workers, **graph}},
        **copy,
    )


def _rerun_graph(described, tmp_path, workers: int, name: str = "", **graph):
    """A copy of the described run with the graph and table steps run again by ``workers`` helpers."""
    src, bench = described
    run = tmp_path / f"w{workers}{name}"
    shutil.copytree(src, run)
    for step in ("graph", "table", "table.files"):
        shutil.rmtree(run / "stages/dedup" / step)
    (run / "stages/dedup/_SUCCESS.json").unlink(missing_ok=True)
    # Another index is another recipe: the features step is redone too (the same features).
    run_stages(run, _config(run, bench, workers, **graph), ["dedup"], force="index" in graph)
    return run


def test_query_blocks_of_any_size_give_the_same_decisions(described, tmp_path):
    """A helper searching its queries a block at a time (each block streams every partition again) finds
    what one block of all its queries finds, with the flat search and with the shared inverted lists."""
    one = read_stage(described[0])
    for block in (1, 2, 5):
        assert read_stage(_rerun_graph(described, tmp_path, 2, f"b{block}", query_block=block)) == one, block
    ivf = {"kind": "ivf_flat", "nlist": 3, "nprobe": 2}
    whole = read_stage(_rerun_graph(described, tmp_path, 1, "ivf", index=ivf))
    assert "ivf3,nprobe2" in _graph(tmp_path / "w1ivf")["index"]
    for workers, block in ((2, 1), (4, 3)):
        got = _rerun_graph(described, tmp_path, workers, f"ivf{block}", query_block=block, index=ivf)
        assert read_stage(got) == whole, (workers, block)


def _graph(run) -> dict:
    return json.loads((run / "stages/dedup/graph/_SUCCESS.json").read_text())


def _reference(run):
    """Hash-group and copy labels of the single-process search over the whole pool (the old graph step)."""
    from curation.algorithms import components as cc
    from curation.algorithms import hamming, knn
    from curation.index_config import IndexConfig
    from curation.stages.dedup.pool import Pool

    rows = {r["key"]: r for r in read_stage(run)}
    pool = Pool(run / "stages/dedup/features")
    keys = pool.keys.to_pylist()
    codes = np.stack([np.frombuffer(rows[k]["hash_code"], np.uint8) for k in keys])
    hash_labels = cc.connected_components(len(codes), ((i, j) for i, j, _ in hamming.near_pairs(codes, 0, "flat")))
    survivors = np.flatnonzero(cc.representatives(hash_labels, -pool.area) == np.arange(len(keys)))
    x = knn.unit_rows(pool.gather("desc.npy", survivors), None)
    x = knn.unit_rows(x, x.mean(axis=0)).astype(np.float16)  # centred on the survivors' mean, stored float16
    graph = knn.copy_graph(x, x[:0], IndexConfig(kind="flat"), 64, 0.8, 0, 1.0)
    return keys, hash_labels, survivors, graph


def test_one_two_and_four_helpers_give_the_single_process_decisions(described, tmp_path):
    one = read_stage(described[0])
    runs = {w: _rerun_graph(described, tmp_path, w) for w in (2, 4)}
    for w, run in runs.items():
        assert read_stage(run) == one, w
        placements = _graph(run)["workers"]
        assert len(placements) == w and all(p["partitions"] == 4 // w for p in placements)
        assert all(p["peak_rss_bytes"] > 0 for p in placements)
        assert not (run / "stages/dedup/graph/work").exists()  # the helpers' files are gone
    status = {r["key"]: r["status"] for r in one}
    assert status[KEY(1, 2)] == status[KEY(3, 2)] == "duplicate_hash"  # byte copies of partition 0's coffee
    assert status[KEY(2, 1)] == "duplicate_copy" and status[KEY(3, 0)] == "benchmark_leak"
    assert status[KEY(2, 2)] == "failed_download:http_404"
    # The single-process search over the whole pool: same groups and components.
    keys, hash_labels, survivors, graph = _reference(described[0])
    rows = {r["key"]: r for r in one}
    for i, key in enumerate(keys):  # byte copies have equal areas: the first of a group is kept
        hashed = rows[key]["status"] == "duplicate_hash"
        assert hashed == (hash_labels[i] != i) and (not hashed or rows[key]["duplicate_of"] == keys[hash_labels[i]])
    comp = {keys[s]: keys[survivors[graph.labels[j]]] for j, s in enumerate(survivors)}
    for key, first in comp.items():
        component = rows[key]["copy_component"]
        assert component is None or keys[component] == first
        near = graph.nearest[survivors.tolist().index(keys.index(key))]
        assert rows[key]["nearest_duplicate_key"] == (keys[survivors[near]] if near >= 0 else None)
    stats = _graph(described[0])
    assert stats["index"] == "flat" and stats["edges"]["self"] == 2 and stats["hash"]["pairs"] == 3


def test_helpers_on_simulated_nodes_keep_their_memory_when_pool_and_helpers_grow_4x(tmp_path):
    """N images and 1 helper, then 4N and 4 helpers, on a cluster of three 2-CPU nodes: every planted copy is
    found across partitions, helpers run on the worker nodes, and the largest helper's recorded peak RSS stays
    flat while the pool grows 4x."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[3]
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    done = subprocess.run(
        [sys.executable, "-m", "tests.stages.dedup.dedup_multinode", str(tmp_path), "2"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())
    peaks = {}
    for label, helpers in (("n", 1), ("4n", 4)):
        graph, planted = result[label]["graph"], result[label]["planted"]
        rows = {r["key"]: r for r in read_stage(tmp_path / label)}
        for kind, pairs in planted.items():
            for a, b in pairs:
                first, second = sorted((a, b))
                assert rows[second]["status"] == f"duplicate_{kind}" and rows[second]["duplicate_of"] == first
        workers = graph["workers"]
        assert len(workers) == helpers
        assert all(w["placement"]["node_id"] != result[label]["nodes"][0] for w in workers)  # not the head
        peaks[label] = max(w["peak_rss_bytes"] for w in workers)
        assert graph["edges"]["self"] >= len(planted["copy"])
    # A helper holding the whole 4N pool would add 4N x (4 x 128 + 12 x 8) bytes of queries alone: ~60 MB.
    assert peaks["4n"] - peaks["n"] < 30 * 2**20, peaks
