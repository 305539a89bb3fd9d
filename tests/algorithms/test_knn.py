"""k-NN graph over descriptors: exact components on planted groups, relative dedup, bad rows."""

from __future__ import annotations

import numpy as np
import pytest

from curation.algorithms import components as cc
from curation.algorithms import knn
from curation.algorithms.index import normalize
from curation.index_config import IndexConfig
from tests.algorithms import dense_funnel


def planted(groups: list[int], dims: int = 128, noise: float = 0.1, seed: int = 0):
    """Unit vectors in groups of the given sizes; returns ``(x, expected labels)``.

    Members of a group are one random direction plus small noise (cosine
    > 0.9 to each other); different groups are near-orthogonal (|cos| < 0.45
    at these sizes). Rows are shuffled; labels are each group's smallest row.
    """
    rng = np.random.default_rng(seed)
    centers = normalize(rng.standard_normal((len(groups), dims)))
    owner = np.repeat(np.arange(len(groups)), groups)
    x = normalize(centers[owner] + noise * rng.standard_normal((len(owner), dims)) / np.sqrt(dims))
    perm = rng.permutation(len(owner))
    x, owner = x[perm], owner[perm]
    first = np.full(len(groups), len(owner))
    np.minimum.at(first, owner, np.arange(len(owner)))
    return x, first[owner]


SIZES = [1] * 300 + [2] * 40 + [3] * 20 + [7] * 5 + [25]


@pytest.mark.parametrize("kind", ["flat", "ivf_flat", "ivf_pq"])
def test_planted_groups_give_exactly_the_expected_components(kind):
    x, expected = planted(SIZES)
    config = IndexConfig(kind=kind, nlist=16, nprobe=16, pq_m=16)
    graph = knn.copy_graph(x.astype(np.float16), np.zeros((0, 128), np.float32), config, 64, 0.6, 64, 0.45)
    assert (graph.labels == expected).all()
    assert graph.kind == {"flat": "flat", "ivf_flat": "ivf_flat", "ivf_pq": "ivf_pq+rerank"}[kind]
    assert len(graph.leak_labels) == 0
    # Every member of a group has a group mate as its nearest other vector.
    grouped = cc.component_sizes(expected) > 1
    assert (expected[graph.nearest[grouped]] == expected[grouped]).all()
    assert (graph.nearest_sim[grouped] > 0.9).all() and (graph.nearest_sim[~grouped] < 0.6).all()


def test_k_is_capped_at_the_pool_size_and_single_group():
    x, expected = planted([3])
    graph = knn.copy_graph(x, np.zeros((0, 128), np.float32), IndexConfig(kind="flat"), 64, 0.6, 64, 0.45)
    assert graph.labels.tolist() == [0, 0, 0]
    one = knn.copy_graph(x[:1], np.zeros((0, 128), np.float32), IndexConfig(), 64, 0.6, 64, 0.45)
    assert one.labels.tolist() == [0] and one.nearest.tolist() == [-1] and np.isnan(one.nearest_sim[0])


def test_empty_pool():
    graph = knn.copy_graph(
        np.zeros((0, 16), np.float32), np.zeros((2, 16), np.float32), IndexConfig(), 64, 0.6, 64, 0.45
    )
    assert graph.labels.size == graph.leak_labels.size == graph.nearest.size == 0


def test_relative_dedup_removes_exactly_the_planted_leaks():
    # Pool: groups of sizes below; benchmark images are near-copies of three
    # pool groups (a singleton, a pair, and a 7-group) plus one unrelated image.
    x, labels = planted(SIZES, seed=3)
    rng = np.random.default_rng(4)
    leaked_groups = [labels[np.flatnonzero(cc.component_sizes(labels) == s)[0]] for s in (1, 2, 7)]
    copies = [x[labels == g][0] for g in leaked_groups]
    unrelated = normalize(rng.standard_normal((1, 128)))[0]
    y = normalize(np.stack(copies + [unrelated]) + 0.1 * rng.standard_normal((4, 128)) / np.sqrt(128))
    graph = knn.copy_graph(x, y, IndexConfig(kind="flat"), 64, 0.6, 64, 0.45)
    survivors = np.arange(len(x))
    dec = dense_funnel.decide(survivors, survivors, graph.labels, graph.leak_labels, np.zeros(len(x)))
    leaked = np.isin(labels, leaked_groups)
    assert leaked.sum() == 1 + 2 + 7
    # Whole components go: the kept member is a leak, the others stay copy duplicates.
    assert ((dec.status == cc.BENCHMARK_LEAK) == (leaked & (dec.ref < 0))).all()
    assert ((dec.hit >= 0) == leaked).all()
    assert sorted(set(dec.hit[leaked].tolist())) == [0, 1, 2]
    assert (dec.status[~leaked & (dec.ref < 0)] == cc.KEPT).all()


def test_rerank_is_exact_against_the_stored_vectors():
    x, _ = planted([1] * 2000, dims=64)
    queries = x[:50]
    flat = knn.Searcher(x, IndexConfig(kind="flat"))
    pq = knn.Searcher(x.astype(np.float16), IndexConfig(kind="ivf_pq", nlist=8, nprobe=8, pq_m=8, refine_k_factor=8))
    s_flat, i_flat = flat.search(queries, 5)
    s_pq, i_pq = pq.search(queries, 5)
    assert (i_pq[:, 0] == i_flat[:, 0]).all() and (i_pq[:, 0] == np.arange(50)).all()
    # Re-ranked scores are exact inner products with the stored (float16) rows.
    stored = x.astype(np.float16).astype(np.float32)
    assert np.allclose(s_pq, np.einsum("qkd,qd->qk", stored[i_pq], queries), atol=1e-5)
    assert (np.diff(s_pq, axis=1) <= 0).all()


def test_edges_and_nearest_other_skip_self_and_missing():
    ids = np.array([[0, 2, -1], [0, 1, 2]])
    sims = np.array([[1.0, 0.7, -np.inf], [0.9, 1.0, 0.5]], np.float32)
    u, v = knn.edges(0, sims, ids, 0.6)
    assert u.tolist() == [0, 1] and v.tolist() == [2, 0]
    near, sim = knn.nearest_other(0, sims, ids)
    assert near.tolist() == [2, 0] and np.allclose(sim, [0.7, 0.9])


def test_bad_rows_name_nan_and_zero_descriptors():
    x = np.array([[1, 0], [np.nan, 1], [0, 0], [np.inf, 0], [1e-9, 0]], np.float32)
    assert knn.bad_rows(x).tolist() == ["", "nan", "zero", "nan", "zero"]


def test_rerank_floor_skips_dissimilar_candidates_but_keeps_duplicates():
    x, expected = planted([1] * 1500 + [2] * 100, dims=64)
    config = IndexConfig(kind="ivf_pq", nlist=8, nprobe=8, pq_m=8)
    full = knn.copy_graph(x, np.zeros((0, 64), np.float32), config, 16, 0.6, 16, 0.45)
    floored = knn.copy_graph(x, np.zeros((0, 64), np.float32), config, 16, 0.6, 16, 0.45, floor=0.45)
    assert (floored.labels == full.labels).all() and (full.labels == expected).all()
    paired = cc.component_sizes(expected) == 2
    assert (floored.nearest[paired] == full.nearest[paired]).all()
    assert (floored.nearest[~paired] == -1).mean() > 0.9  # no re-ranked neighbour above the floor
