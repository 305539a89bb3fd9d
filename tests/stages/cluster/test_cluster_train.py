"""Flat k-means over training workers, in-process: any worker count gives Faiss' single-process result."""

from __future__ import annotations

import numpy as np
import pytest

from curation.algorithms.kmeans import assign, sample_indices, train_kmeans
from curation.atomic import read_json
from curation.runner.local import run_stages
from curation.stages.embed import arrays as embeddings
from tests.stages.cluster.test_cluster import config, planted_pool, read_assign


def run_flat(run_dir, workers, **cluster):
    planted_pool(run_dir, sizes=(150,) * 8, d=16, n_partitions=4, noise=0.3, seed=3)
    settings = {
        "k": 12,
        "init": "random",
        "n_iter": 8,
        "max_points_per_centroid": 40,
        "train": {"workers": workers, "num_cpus": 0.5},
        **cluster,
    }
    run_stages(run_dir, config(run_dir, **settings), ["cluster"])
    train = run_dir / "stages/cluster/train"
    return np.load(train / "centroids.npy"), read_assign(run_dir), read_json(train / "_SUCCESS.json")


@pytest.mark.parametrize("init", ["random", "kmeans++"])
def test_any_worker_count_gives_the_single_process_faiss_result(tmp_path, init):
    runs = {w: run_flat(tmp_path / f"w{w}", w, init=init) for w in (1, 2, 4)}
    centroids, tables, stats = runs[1]
    for w in (2, 4):
        assert np.array_equal(runs[w][0], centroids)
        assert [t.to_pylist() for t in runs[w][1]] == [t.to_pylist() for t in tables]
        assert [s["rows"] for s in runs[w][2]["workers"]] == [12 * 40 // w] * w
    # Faiss in one process, on the same sample from the same seed.
    run_dir = tmp_path / "w1"
    n = sum(embeddings.pool_counts(run_dir).values())
    x = embeddings.take_pool_rows(run_dir, sample_indices(n, 12, 40, 1))
    ref = train_kmeans(x, 12, n_iter=8, seed=1, max_points_per_centroid=40, init=init)
    np.testing.assert_allclose(centroids, ref.centroids, rtol=1e-5, atol=2e-6)
    assert stats["objective"] == pytest.approx(ref.objective, rel=1e-5)
    pool = embeddings.take_pool_rows(run_dir, np.arange(n))
    labels = np.concatenate([t.column("cluster").to_numpy() for t in tables])
    np.testing.assert_array_equal(labels[labels >= 0], assign(pool, ref.centroids)[0])


def test_training_reports_its_iterations_as_progress(tmp_path, progress_moves):
    run_flat(tmp_path, 2, n_redo=2)
    train = [(n, total) for label, n, total in progress_moves if label == "cluster/train"]
    assert train == [(i, 16) for i in range(1, 17)]


def test_hierarchical_training_reports_its_levels_as_progress(tmp_path, progress_moves):
    planted_pool(tmp_path)
    levels = [{"n_clusters": 12, "n_resampling_steps": 1, "sample_size": 5}, {"n_clusters": 4}]
    run_stages(
        tmp_path, config(tmp_path, mode="hierarchical", hierarchical={"levels": levels, "target_size": 90}), ["cluster"]
    )
    assert [(n, total) for label, n, total in progress_moves if label == "cluster/train"] == [(1, 2), (2, 2)]


def test_hierarchical_mode_is_the_same_for_any_worker_count_and_equals_one_process(tmp_path):
    from curation.algorithms.hkmeans import KMeansOptions, LevelSpec, balanced_sample, build_hierarchy

    levels = [{"n_clusters": 20, "n_resampling_steps": 2, "sample_size": 5}, {"n_clusters": 6}]
    tables = {}
    for w in (1, 2, 4):
        run_dir = tmp_path / f"w{w}"
        planted_pool(run_dir, sizes=(300, 120, 60, 20), n_partitions=4, seed=2)
        hier = {"levels": levels, "target_size": 100, "sampling_strategy": "random"}
        run_stages(run_dir, config(run_dir, mode="hierarchical", hierarchical=hier, train={"workers": w}), ["cluster"])
        tables[w] = [t.to_pylist() for t in read_assign(run_dir)]
        assert len(read_json(run_dir / "stages/cluster/train/_SUCCESS.json")["workers"]) == w
    assert tables[2] == tables[1] and tables[4] == tables[1]
    x = embeddings.take_pool_rows(tmp_path / "w1", np.arange(500))
    options = KMeansOptions(n_iter=20, strategy="random", seed=1, max_points_per_centroid=64)
    tree = build_hierarchy(x, [LevelSpec(20, 2, 5), LevelSpec(6)], options)
    selected = balanced_sample(tree, 100, strategy="random", seed=1)
    rows = [r for t in tables[1] for r in t if r["cluster"] >= 0]
    assert [r["cluster"] for r in rows] == tree.labels.tolist()
    assert [r["selected"] for r in rows] == selected.tolist()
