"""Union-find components, representatives and the dedup funnel decisions."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components as scipy_components

from curation.algorithms import components as cc
from tests.algorithms import dense_funnel


def _canonical(n: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """scipy's components, relabelled by each component's smallest node."""
    _, lab = scipy_components(coo_matrix((np.ones(len(u)), (u, v)), shape=(n, n)), directed=False)
    smallest = np.full(lab.max() + 1 if n else 0, n)
    np.minimum.at(smallest, lab, np.arange(n))
    return smallest[lab]


def test_known_groups_give_exact_labels():
    # Groups {0, 3, 7}, {1, 2}, {4}, {5, 6, 8, 9}.
    u = np.array([7, 2, 6, 9, 8, 3])
    v = np.array([3, 1, 5, 8, 6, 0])
    labels = cc.connected_components(10, [(u, v)])
    assert labels.tolist() == [0, 1, 1, 0, 4, 5, 5, 0, 5, 5]
    assert cc.component_sizes(labels).tolist() == [3, 2, 2, 3, 1, 4, 4, 3, 4, 4]


@pytest.mark.parametrize("n,m,chunk", [(1000, 700, 50), (20000, 15000, 4096), (5000, 20000, 1000)])
def test_matches_scipy_on_random_graphs_whatever_the_chunking(n, m, chunk):
    rng = np.random.default_rng(n)
    u, v = rng.integers(0, n, m), rng.integers(0, n, m)
    expected = _canonical(n, u, v)
    chunks = [(u[i : i + chunk], v[i : i + chunk]) for i in range(0, m, chunk)]
    assert (cc.connected_components(n, chunks) == expected).all()
    # Edge order and direction do not matter: labels are each component's smallest node.
    perm = rng.permutation(m)
    assert (cc.connected_components(n, [(v[perm], u[perm])]) == expected).all()


def test_adversarial_shapes_converge():
    n = 50_000
    star = cc.connected_components(n, [(np.full(n - 1, n - 1), np.arange(n - 1))])
    chain = np.arange(n - 1)
    perm = np.random.default_rng(0).permutation(n - 1)
    path = cc.connected_components(n, [(chain[perm], chain[perm] + 1)])
    assert (star == 0).all() and (path == 0).all()


def test_no_edges_and_empty_graph():
    assert cc.connected_components(4, []).tolist() == [0, 1, 2, 3]
    assert cc.connected_components(0, []).tolist() == []
    assert cc.representatives(np.zeros(0, np.int64), np.zeros(0)).tolist() == []


def test_representative_is_best_rank_then_smallest_node():
    labels = np.array([0, 0, 0, 3, 3, 5])
    area = np.array([10, 40, 40, 7, 9, 1])
    # Largest area first; nodes 1 and 2 tie, the smaller node wins.
    assert cc.representatives(labels, -area).tolist() == [1, 1, 1, 4, 4, 5]
    assert cc.representatives(labels, np.zeros(6)).tolist() == [0, 0, 0, 3, 3, 5]


def test_decide_funnel():
    # Pool nodes 0..7. Hashing: node 1 duplicates node 0, node 5 duplicates node 4.
    hash_rep = np.array([0, 0, 2, 3, 4, 4, 6, 7])
    survivors = np.array([0, 2, 3, 4, 6, 7])
    # Copy components over survivors (indices 0..5): {0, 1} = nodes {0, 2}, {3, 4} = nodes {4, 6}.
    copy_labels = np.array([0, 0, 2, 3, 3, 5])
    # Leak graph: one benchmark image (index 6) joined with survivors 3, 4 (nodes 4, 6).
    leak_labels = np.array([0, 0, 2, 3, 3, 5, 3])
    rank = -np.array([10, 50, 5, 5, 5, 5])  # node 2 has the largest area of its component
    dec = dense_funnel.decide(hash_rep, survivors, copy_labels, leak_labels, rank)
    K, H, C, L = cc.KEPT, cc.HASH_DUPLICATE, cc.COPY_DUPLICATE, cc.BENCHMARK_LEAK
    assert dec.status.tolist() == [C, H, K, K, L, H, C, K]
    assert dec.ref.tolist() == [2, 0, -1, -1, -1, 4, 4, -1]
    assert dec.component.tolist() == [0, -1, 0, 3, 4, -1, 4, 7]
    assert dec.component_size.tolist() == [2, 0, 2, 1, 2, 0, 2, 1]
    assert dec.hit.tolist() == [-1, -1, -1, -1, 0, -1, 0, -1]


def test_decide_without_benchmarks_and_single_group():
    n = 5
    dec = dense_funnel.decide(np.zeros(n, np.int64), np.array([0]), np.array([0]), np.zeros(0, np.int64), np.zeros(1))
    assert dec.status.tolist() == [cc.KEPT] + [cc.HASH_DUPLICATE] * 4
    assert dec.ref.tolist() == [-1, 0, 0, 0, 0]
