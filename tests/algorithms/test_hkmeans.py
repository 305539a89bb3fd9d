"""Hierarchical k-means with resampling and balanced sampling on known structures."""

from __future__ import annotations

import numpy as np
import pytest

from curation.algorithms.hkmeans import (
    Hierarchy,
    KMeansOptions,
    LevelSpec,
    allocate,
    balanced_sample,
    build_hierarchy,
    leaf_quotas,
    per_cluster_sample,
    rank_in_group,
    resampled_kmeans,
)
from curation.algorithms.kmeans import assign
from curation.algorithms.knn import unit_rows as unit


def hand_tree(leaf_sizes: list[int], parents: list[list[int]]) -> Hierarchy:
    """A tree with given leaf sizes and parent maps; points of leaf c score 1, 1/2, 1/3, ..."""
    labels = np.repeat(np.arange(len(leaf_sizes)), leaf_sizes)
    scores = np.concatenate([1.0 / np.arange(1, s + 1) for s in leaf_sizes]).astype(np.float32)
    ks = [len(leaf_sizes)] + [max(p) + 1 for p in parents]
    centroids = [np.zeros((k, 2), np.float32) for k in ks]
    return Hierarchy(centroids, [np.array(p) for p in parents], labels, scores, spherical=True)


def test_rank_in_group():
    groups = np.array([2, 0, 2, 0, 1, 2])
    priority = np.array([0.5, 0.1, 0.9, 0.7, 0.3, 0.5])
    # Group 2: 0.9 first, then the two 0.5 in input order.
    assert rank_in_group(groups, priority).tolist() == [1, 1, 0, 0, 0, 2]


def test_allocate_exact_caps():
    rng = np.random.default_rng(0)
    sizes = np.array([10, 1, 5, 2, 8])
    parent = np.array([0, 0, 1, 1, 1])
    # Parent 0: cap 4 -> 4 + 1 = 5. Parent 1: cap 2 -> 2 + 2 + 2 = 6.
    assert allocate(sizes, parent, np.array([5, 6]), rng).tolist() == [4, 1, 2, 2, 2]
    # A quota beyond the sizes takes everything.
    assert allocate(sizes, parent, np.array([100, 100]), rng).tolist() == [10, 1, 5, 2, 8]
    assert allocate(sizes, parent, np.array([0, 0]), rng).tolist() == [0, 0, 0, 0, 0]


def test_allocate_remainder_goes_to_children_with_room():
    rng = np.random.default_rng(0)
    sizes = np.array([5, 2, 8])
    # Cap 1 gives 3; the remaining 2 go to two of the three children (all have room).
    for seed in range(10):
        out = allocate(sizes, np.zeros(3, np.int64), np.array([5]), np.random.default_rng(seed))
        assert out.sum() == 5 and sorted(out.tolist()) == [1, 2, 2]
    # Random trees: exact totals, never above size, and max-min fair per parent.
    for _ in range(20):
        m, p = 40, 6
        sizes = rng.integers(0, 30, size=m)
        parent = rng.integers(0, p, size=m)
        quota = rng.integers(0, 200, size=p)
        out = allocate(sizes, parent, quota, rng)
        assert np.all((0 <= out) & (out <= sizes))
        totals = np.bincount(parent, weights=sizes, minlength=p)
        np.testing.assert_array_equal(np.bincount(parent, weights=out, minlength=p), np.minimum(quota, totals))
        for j in range(p):
            mine = parent == j
            if mine.any():
                short = mine & (out < sizes)  # children not fully taken are within 1 of the largest take
                assert not short.any() or out[short].min() >= out[mine].max() - 1


def test_balanced_sampling_exact_counts_on_a_hand_built_tree():
    # Leaves 0..5 -> middle nodes [0, 0, 1, 1, 2, 2] -> top nodes [0, 0, 1].
    tree = hand_tree([50, 30, 5, 5, 2, 8], [[0, 0, 1, 1, 2, 2], [0, 0, 1]])
    assert [s.tolist() for s in tree.sizes()] == [[50, 30, 5, 5, 2, 8], [80, 10, 10], [90, 10]]
    # Top: cap 40 -> 40 + 10 = 50. Node 0 (40): middle [80, 10] cap 30 -> 30 + 10.
    # Middle 0 (30): leaves [50, 30] cap 15 -> 15 + 15; middle 1 and 2 take all.
    quotas = leaf_quotas(tree, 50, np.random.default_rng(0))
    assert quotas.tolist() == [15, 15, 5, 5, 2, 8]
    selected = balanced_sample(tree, 50, strategy="closest")
    assert selected.sum() == 50
    assert np.bincount(tree.labels[selected], minlength=6).tolist() == [15, 15, 5, 5, 2, 8]
    # "closest" takes the highest-scoring points of each leaf: the first ones here.
    first_of_leaf0 = np.zeros(50, bool)
    first_of_leaf0[:15] = True
    np.testing.assert_array_equal(selected[:50], first_of_leaf0)
    # "random" takes the same counts, other points.
    rand = balanced_sample(tree, 50, strategy="random", seed=1)
    assert np.bincount(tree.labels[rand], minlength=6).tolist() == [15, 15, 5, 5, 2, 8]
    assert not np.array_equal(rand, selected)
    # A target above the pool selects everything.
    assert balanced_sample(tree, 1000).all()


def test_paths_follow_parents():
    tree = hand_tree([2, 1, 1], [[1, 0, 1], [0, 0]])
    assert tree.paths().tolist() == [[0, 1, 0], [0, 1, 0], [1, 0, 0], [2, 1, 0]]


def test_per_cluster_sample_takes_the_nearest():
    labels = np.array([0, 0, 0, 1, 1, 2])
    near = np.array([0.1, 0.9, 0.5, 0.2, 0.3, 0.0])
    idx = per_cluster_sample(labels, near, 2, "closest", np.random.default_rng(0))
    assert idx.tolist() == [1, 2, 3, 4, 5]
    rand = per_cluster_sample(labels, near, 1, "random", np.random.default_rng(0))
    assert np.bincount(labels[rand]).tolist() == [1, 1, 1]
    with pytest.raises(ValueError, match="strategy"):
        per_cluster_sample(labels, near, 1, "farthest", np.random.default_rng(0))


def imbalanced_concepts(seed: int = 0):
    """10 tight, well separated concepts with sizes from 1200 down to 10 points."""
    rng = np.random.default_rng(seed)
    sizes = [1200, 600, 300, 120, 60, 40, 20, 20, 10, 10]
    centres = unit(rng.normal(size=(len(sizes), 16)))
    truth = np.repeat(np.arange(len(sizes)), sizes)
    x = unit(centres[truth] + 0.04 * rng.normal(size=(len(truth), 16)))
    return x, truth, np.array(sizes)


def test_resampled_kmeans_is_a_consistent_assignment():
    x, _, _ = imbalanced_concepts()
    spec = LevelSpec(n_clusters=30, n_resampling_steps=3, sample_size=5, init="random")
    c, labels, scores = resampled_kmeans(x, spec, KMeansOptions(n_iter=10))
    assert c.shape == (30, 16) and labels.shape == scores.shape == (len(x),)
    again_labels, again_scores = assign(x, c)
    np.testing.assert_array_equal(labels, again_labels)
    np.testing.assert_array_equal(scores, again_scores)
    c2, labels2, _ = resampled_kmeans(x, spec, KMeansOptions(n_iter=10))
    np.testing.assert_array_equal(c, c2)  # seeded: reproducible


def test_hierarchy_and_sampling_rebalance_concepts():
    x, truth, sizes = imbalanced_concepts()
    levels = [LevelSpec(60, 3, 10), LevelSpec(10, 5, 2)]
    tree = build_hierarchy(x, levels, KMeansOptions(n_iter=15))
    assert tree.n_clusters == [60, 10] and tree.parents[0].shape == (60,)
    paths = tree.paths()
    np.testing.assert_array_equal(paths[:, 0], tree.labels)
    # The top level finds the 10 concepts: each concept lies under one top node.
    top_of_concept = [set(paths[truth == c, 1].tolist()) for c in range(10)]
    assert all(len(s) == 1 for s in top_of_concept)
    assert len(set().union(*top_of_concept)) == 10
    selected = balanced_sample(tree, 200, strategy="closest", seed=0)
    assert selected.sum() == 200
    per_concept = np.bincount(truth[selected], minlength=10)
    # Balanced: cap x with sum(min(x, size)) = 200 is 23 or 24 for the 6 large concepts;
    # the 4 small ones are taken whole. Uniform sampling would give ~1 point each to them.
    assert per_concept[6:].tolist() == [20, 20, 10, 10]
    assert per_concept[:6].min() >= 23 and per_concept[:6].max() <= 24
