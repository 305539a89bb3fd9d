"""Stage cluster, in-process, on planted embeddings laid out as the embed stage writes them."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.atomic import read_json
from curation.errors import ConfigError, RunError
from curation.runner.local import run_stages
from tests.stages.embed.test_arrays import unit, write_pool


def planted_pool(run_dir, sizes=(100, 100, 100, 100, 100, 100), d=16, n_partitions=3, noise=0.05, seed=0):
    """Embedded points around ``len(sizes)`` centres, spread over partitions, with a few
    non-embedded rows; returns (X in global order, true concept per point)."""
    rng = np.random.default_rng(seed)
    centres = unit(rng.normal(size=(len(sizes), d)))
    truth = rng.permutation(np.repeat(np.arange(len(sizes)), sizes))
    x = unit(centres[truth] + noise * rng.normal(size=(len(truth), d)))
    parts = {}
    for p, chunk in enumerate(np.array_split(np.arange(len(x)), n_partitions)):
        emb_row = list(range(len(chunk)))
        emb_row[1:1] = [-1, -1]  # two rows dropped upstream, between embedded ones
        keys = [f"{p:06d}{i:06d}" for i in range(len(emb_row))]
        parts[p] = (keys, emb_row, x[chunk])
    write_pool(run_dir, parts)
    return x, truth


def config(run_dir, **cluster):
    base = {
        "mode": "flat",
        "k": 6,
        "n_iter": 20,
        "init": "kmeans++",
        "max_points_per_centroid": 64,
        "device": "cpu",
        "assign_batch_size": 50,
    }
    return {"name": "t", "run_dir": str(run_dir), "stages": ["cluster"], "seed": 1, "cluster": {**base, **cluster}}


def read_assign(run_dir):
    parts = sorted((run_dir / "stages" / "cluster" / "assign").glob("part-*.parquet"))
    return [pq.read_table(p) for p in parts]


def test_flat_kmeans_assigns_every_row_to_its_nearest_centroid(tmp_path):
    x, truth = planted_pool(tmp_path)
    run_stages(tmp_path, config(tmp_path), ["cluster"])
    train = tmp_path / "stages" / "cluster" / "train"
    centroids = np.load(train / "centroids.npy")
    assert centroids.shape == (6, 16)
    stats = read_json(train / "_SUCCESS.json")
    assert stats["k"] == 6 and stats["points"] == 600 and stats["train_points"] == 6 * 64 and not stats["clamped"]
    parts = read_assign(tmp_path)
    assert len(parts) == 3 and all(t.num_rows == 202 for t in parts)
    first = parts[0]
    assert first.column_names == ["key", "status", "dropped_by", "error", "cluster", "similarity"]
    # Rows dropped upstream pass through: status kept, cluster -1, similarity null.
    assert first.column("status").to_pylist()[1:3] == ["duplicate_copy"] * 2
    assert first.column("cluster").to_pylist()[1:3] == [-1, -1]
    assert first.column("similarity").to_pylist()[1:3] == [None, None]
    labels = np.concatenate([t.column("cluster").to_numpy() for t in parts])
    sims = np.concatenate([t.column("similarity").to_numpy(zero_copy_only=False) for t in parts])
    embedded = labels >= 0
    assert embedded.sum() == 600
    ip = x.astype(np.float64) @ centroids.T.astype(np.float64)
    np.testing.assert_array_equal(labels[embedded], ip.argmax(axis=1))
    np.testing.assert_allclose(sims[embedded], ip.max(axis=1), atol=1e-5)
    # The planted concepts are recovered: one cluster per concept.
    assert len(set(zip(truth.tolist(), labels[embedded].tolist(), strict=False))) == 6
    sizes = pq.read_table(tmp_path / "stages" / "cluster" / "sizes" / "sizes.parquet")
    assert sizes.column("size").to_pylist() == np.bincount(labels[embedded], minlength=6).tolist()
    assert set(sizes.column("level").to_pylist()) == {0}
    size_stats = read_json(tmp_path / "stages" / "cluster" / "sizes" / "_SUCCESS.json")
    assert size_stats["empty_clusters"] == 0 and size_stats["assigned"] == 600


def test_k_above_pool_is_clamped_or_refused(tmp_path):
    planted_pool(tmp_path, sizes=(10, 10), n_partitions=1)
    run_stages(tmp_path, config(tmp_path, k=500, init="random"), ["cluster"])
    stats = read_json(tmp_path / "stages" / "cluster" / "train" / "_SUCCESS.json")
    assert stats["k_requested"] == 500 and stats["k"] == 20 and stats["clamped"]
    assert np.load(tmp_path / "stages" / "cluster" / "train" / "centroids.npy").shape == (20, 16)
    other = tmp_path / "refused"
    planted_pool(other, sizes=(10, 10), n_partitions=1)
    with pytest.raises(RunError, match="cluster.k: 500 clusters requested but only 20 samples"):
        run_stages(other, config(other, k=500, clamp_k=False), ["cluster"])


def test_empty_clusters_are_reported(tmp_path):
    # 3 distinct embeddings, 5 clusters: at most 3 clusters can receive points.
    base = unit(np.random.default_rng(3).normal(size=(3, 8)))
    x = base[np.arange(30) % 3]
    write_pool(tmp_path, {0: ([f"k{i}" for i in range(30)], list(range(30)), x)})
    run_stages(tmp_path, config(tmp_path, k=5, init="random"), ["cluster"])
    stats = read_json(tmp_path / "stages" / "cluster" / "sizes" / "_SUCCESS.json")
    sizes = pq.read_table(tmp_path / "stages" / "cluster" / "sizes" / "sizes.parquet").column("size").to_pylist()
    assert sum(sizes) == 30 and stats["empty_clusters"] == sizes.count(0) >= 2
    assert stats["empty_cluster_ids"] == [i for i, s in enumerate(sizes) if s == 0]


def hierarchical(**over):
    levels = [
        {"n_clusters": 40, "n_resampling_steps": 2, "sample_size": 5},
        {"n_clusters": 8, "n_resampling_steps": 3, "sample_size": 2},
    ]
    return {"mode": "hierarchical", "k": 1, "hierarchical": {"levels": levels, "target_size": 120, **over}}


def test_hierarchical_mode_selects_a_balanced_subset(tmp_path):
    sizes = (700, 300, 120, 60, 30, 20, 10, 10)
    x, truth = planted_pool(tmp_path, sizes=sizes, noise=0.04, n_partitions=2)
    run_stages(tmp_path, config(tmp_path, **hierarchical()), ["cluster"])
    train = tmp_path / "stages" / "cluster" / "train"
    assert np.load(train / "level-0.centroids.npy").shape == (40, 16)
    assert np.load(train / "level-1.centroids.npy").shape == (8, 16)
    parents = np.load(train / "level-0.parents.npy")
    parts = read_assign(tmp_path)
    table = parts[0].column_names
    assert table == ["key", "status", "dropped_by", "error", "cluster", "similarity", "cluster_path", "selected"]
    leaf = np.concatenate([t.column("cluster").to_numpy() for t in parts])
    paths = [p for t in parts for p in t.column("cluster_path").to_pylist()]
    selected = np.concatenate([t.column("selected").to_numpy(zero_copy_only=False) for t in parts])
    status = [s for t in parts for s in t.column("status").to_pylist()]
    embedded = leaf >= 0
    assert selected.sum() == 120 and not selected[~embedded].any()
    for lf, path in zip(leaf[embedded], [p for p, e in zip(paths, embedded, strict=False) if e], strict=False):
        assert path == [int(parents[lf]), int(lf)]  # top level first, leaf last
    assert all(p is None for p, e in zip(paths, embedded, strict=False) if not e)
    # Unselected embedded samples are dropped by cluster; dropped upstream rows keep their status.
    assert {s for s, e, sel in zip(status, embedded, selected, strict=False) if e and not sel} == {"not_selected"}
    assert {s for s, e, sel in zip(status, embedded, selected, strict=False) if sel} == {"success"}
    assert {s for s, e in zip(status, embedded, strict=False) if not e} == {"duplicate_copy"}
    # Balanced: cap 16 with sum(min(16, size)) = 116, 4 more to random concepts with room;
    # the two concepts of 10 points are taken whole.
    per_concept = np.bincount(truth[selected[embedded]], minlength=len(sizes))
    assert per_concept[-2:].tolist() == [10, 10] and set(per_concept[:-2].tolist()) <= {16, 17}
    sizes_table = pq.read_table(tmp_path / "stages" / "cluster" / "sizes" / "sizes.parquet")
    top = sizes_table.filter(pa.array(sizes_table.column("level").to_numpy() == 1))
    assert top.num_rows == 8
    assert sum(top.column("selected").to_pylist()) == 120 and sum(top.column("size").to_pylist()) == len(x)


def test_config_errors_name_the_key(tmp_path):
    planted_pool(tmp_path, sizes=(10, 10), n_partitions=1)
    with pytest.raises(ConfigError, match="cluster.hierarchical: required"):
        run_stages(tmp_path, config(tmp_path, mode="hierarchical"), ["cluster"])
    bad = hierarchical()
    bad["hierarchical"]["levels"][1]["n_clusters"] = 80
    with pytest.raises(ConfigError, match="levels.1.n_clusters"):
        run_stages(tmp_path, config(tmp_path, **bad), ["cluster"])
