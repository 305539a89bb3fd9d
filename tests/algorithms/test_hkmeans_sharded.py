from dataclasses import replace

import numpy as np
import pytest

from curation.algorithms.hkmeans import KMeansOptions, LevelSpec, balanced_sample, build_hierarchy, resampled_kmeans
from curation.algorithms.hkmeans_sharded import PoolPart, first_level, local_fan, select_balanced


def pool(n=600, d=8, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((8, d))
    x = centres[rng.integers(0, 8, n)] + 0.3 * rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def split(x, count):
    bounds = np.linspace(0, len(x), count + 1).astype(int)
    return [PoolPart(x[lo:hi], lo) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]


@pytest.mark.parametrize("strategy", ["closest", "random"])
@pytest.mark.parametrize("init", ["kmeans++", "random"])
@pytest.mark.parametrize("count", [1, 2, 4])
def test_sharded_tree_and_selection_equal_the_single_process_ones(strategy, init, count):
    x = pool()
    specs = [LevelSpec(20, 2, 5, init), LevelSpec(6, 2, 2)]
    options = KMeansOptions(n_iter=5, strategy=strategy, seed=3, max_points_per_centroid=64)
    tree = build_hierarchy(x, specs, options)
    expected = balanced_sample(tree, 100, strategy=strategy, seed=3)

    parts = split(x, count)
    fan = local_fan(parts)
    centroids, counts = first_level(fan, [p.size() for p in parts], specs[0], options)
    np.testing.assert_allclose(centroids, tree.centroids[0], atol=1e-6)
    np.testing.assert_array_equal(np.concatenate([p.labels for p in parts]), tree.labels)
    np.testing.assert_allclose(np.concatenate([p.scores for p in parts]), tree.scores, atol=1e-6)
    assert counts.tolist() == tree.sizes()[0].tolist()
    _, parents, _ = resampled_kmeans(centroids, specs[1], replace(options, seed=4))
    sizes = [counts, np.bincount(parents, weights=counts, minlength=6).astype(np.int64)]
    assert select_balanced(fan, count, sizes, [parents], 100, strategy, 3) == 100
    np.testing.assert_array_equal(np.concatenate([p.selected for p in parts]), expected)


def test_training_sample_is_capped_and_spread_over_the_shards():
    x = pool(n=3000)
    parts = split(x, 3)
    spec = LevelSpec(10, 0, 1, "random")
    options = KMeansOptions(n_iter=5, seed=1, max_points_per_centroid=50)
    centroids, counts = first_level(local_fan(parts), [p.size() for p in parts], spec, options)
    assert sum(len(p.members) for p in parts) == 500 and all(len(p.members) > 100 for p in parts)
    assert counts.sum() == 3000 and centroids.shape == (10, 8)
