"""Faiss k-means: planted clusters, exact assignment, sample caps, empty clusters."""

from __future__ import annotations

import numpy as np
import pytest

from curation.algorithms.kmeans import (
    assign,
    cluster_means,
    cluster_sizes,
    kmeans_plus_plus,
    lloyd,
    sample_indices,
    train_kmeans,
    use_gpu,
)
from curation.algorithms.knn import unit_rows as unit


def planted(n_clusters: int = 8, per_cluster: int = 150, d: int = 32, noise: float = 0.05, seed: int = 0):
    """Unit vectors around ``n_clusters`` random unit centres; returns (x, true labels, centres)."""
    rng = np.random.default_rng(seed)
    centres = unit(rng.normal(size=(n_clusters, d)))
    truth = np.repeat(np.arange(n_clusters), per_cluster)
    x = unit(centres[truth] + noise * rng.normal(size=(len(truth), d)))
    perm = rng.permutation(len(truth))
    return x[perm], truth[perm], centres


def test_recovers_planted_clusters():
    x, truth, centres = planted()
    result = train_kmeans(x, 8, n_iter=25, seed=3, init="kmeans++")
    assert result.centroids.shape == (8, 32) and result.centroids.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(result.centroids, axis=1), 1.0, atol=1e-5)  # spherical
    # Every planted centre has exactly one centroid close to it.
    sim = centres @ result.centroids.T
    match = sim.argmax(axis=1)
    assert sorted(match.tolist()) == list(range(8))
    assert sim.max(axis=1).min() > 0.99
    # And points are labelled as planted, up to that renaming.
    labels, scores = assign(x, result.centroids)
    np.testing.assert_array_equal(labels, match[truth])
    assert scores.min() > 0.9
    assert result.n_train == len(x) and not result.gpu


def test_assignment_is_exact_brute_force_nearest_centroid():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3000, 24)).astype(np.float32)
    c = rng.normal(size=(50, 24)).astype(np.float32)
    labels, scores = assign(x, c, spherical=True)
    ip = x.astype(np.float64) @ c.T.astype(np.float64)
    np.testing.assert_array_equal(labels, ip.argmax(axis=1))
    np.testing.assert_allclose(scores, ip.max(axis=1), rtol=1e-4, atol=1e-4)
    l2_labels, l2 = assign(x, c, spherical=False)
    d2 = ((x[:, None, :].astype(np.float64) - c[None].astype(np.float64)) ** 2).sum(-1)
    np.testing.assert_array_equal(l2_labels, d2.argmin(axis=1))
    np.testing.assert_allclose(l2, d2.min(axis=1), rtol=1e-4)
    # Chunking changes nothing.
    small_labels, small_scores = assign(x, c, chunk_size=7)
    np.testing.assert_array_equal(small_labels, labels)
    np.testing.assert_array_equal(small_scores, scores)


def test_kmeans_plus_plus_seeds_one_point_per_tight_cluster():
    x, truth, centres = planted(n_clusters=12, per_cluster=60, d=16, noise=0.03, seed=4)
    for seed in range(5):
        seeds = kmeans_plus_plus(x, 12, np.random.default_rng(seed))
        assert seeds.shape == (12, 16)
        # Every seed is a data point, and each planted cluster got exactly one.
        assert np.isin(seeds.view([("", seeds.dtype)] * 16), x.view([("", x.dtype)] * 16)).all()
        assert sorted((centres @ seeds.T).argmax(axis=0).tolist()) == list(range(12))
    duplicates = np.repeat(x[:2], 5, axis=0)  # 2 distinct points, 3 seeds: still returns 3 rows
    assert kmeans_plus_plus(duplicates, 3, np.random.default_rng(0)).shape == (3, 16)


def test_sample_indices_cap_and_seed():
    idx = sample_indices(10_000, 10, 256, seed=5)
    assert len(idx) == 2560 and np.all(np.diff(idx) > 0) and idx.min() >= 0 and idx.max() < 10_000
    np.testing.assert_array_equal(idx, sample_indices(10_000, 10, 256, seed=5))
    assert not np.array_equal(idx, sample_indices(10_000, 10, 256, seed=6))
    np.testing.assert_array_equal(sample_indices(500, 10, 256, seed=5), np.arange(500))


def test_training_reports_the_capped_sample():
    x, _, _ = planted(n_clusters=4, per_cluster=400, d=8)
    result = train_kmeans(x, 4, max_points_per_centroid=50, seed=0)
    assert result.n_train == 200
    assert np.isfinite(result.objective) and result.objective > 0


def test_k_above_n_is_refused():
    x = np.eye(4, dtype=np.float32)
    with pytest.raises(ValueError, match="k <= n"):
        train_kmeans(x, 5)


def test_empty_clusters_keep_their_centroid_and_size_zero():
    x, truth, centres = planted(n_clusters=3, per_cluster=50, d=16)
    far = -centres.mean(axis=0, keepdims=True)
    far /= np.linalg.norm(far)
    init = np.vstack([centres, far]).astype(np.float32)
    # Make the fourth centroid unreachable: every point is much closer to its own centre.
    out = lloyd(x, init, n_iter=3)
    np.testing.assert_array_equal(out[3], init[3])
    labels, _ = assign(x, out)
    sizes = cluster_sizes(labels, 4)
    assert sizes.tolist()[:3] == [50, 50, 50] and sizes[3] == 0
    assert cluster_sizes(np.array([-1, 0, 0, 2]), 4).tolist() == [2, 0, 1, 0]


def test_cluster_means_match_numpy():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(200, 6)).astype(np.float32)
    labels = rng.integers(0, 5, size=200)
    labels[labels == 4] = 3  # cluster 4 empty
    previous = rng.normal(size=(5, 6)).astype(np.float32)
    means = cluster_means(x, labels, previous, spherical=False)
    for c in range(4):
        np.testing.assert_allclose(means[c], x[labels == c].mean(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(means[4], previous[4])
    sph = cluster_means(x, labels, previous, spherical=True)
    np.testing.assert_allclose(np.linalg.norm(sph[:4], axis=1), 1.0, atol=1e-6)


def test_cpu_device_never_uses_gpu():
    assert use_gpu("cpu") is False
    import faiss

    assert use_gpu("auto") == (faiss.get_num_gpus() > 0)
