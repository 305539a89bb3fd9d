"""Retrieval rules on synthetic arrays with known structure."""

from __future__ import annotations

import numpy as np
import pytest

from curation.algorithms import retrieval as rt
from curation.algorithms.index import build_index, normalize
from curation.index_config import IndexConfig


def _hits(pool, similarity, dataset, query=None, rank=None):
    n = len(pool)
    return rt.Hits.build(
        pool,
        query if query is not None else np.arange(n),
        similarity,
        rank if rank is not None else np.zeros(n),
        np.full(n, -1),
        dataset,
    )


def test_sample_hits_skip_missing_neighbours():
    scores = np.array([[0.9, 0.5, -3e38], [0.8, -3e38, -3e38]], dtype=np.float32)
    ids = np.array([[4, 2, -1], [2, -1, -1]])
    hits = rt.sample_hits(scores, ids, dataset=3, pool_clusters=np.array([7, 7, 8, 8, 9]))
    assert hits.pool.tolist() == [4, 2, 2]
    assert hits.query.tolist() == [0, 0, 1]
    assert hits.rank.tolist() == [0, 1, 0]
    assert hits.cluster.tolist() == [9, 8, 8]
    assert hits.dataset.tolist() == [3, 3, 3]
    np.testing.assert_allclose(hits.similarity, [0.9, 0.5, 0.8])


def test_k_larger_than_pool_and_more_queries_than_pool():
    rng = np.random.default_rng(0)
    pool = normalize(rng.standard_normal((3, 8)))
    queries = normalize(rng.standard_normal((10, 8)))
    scores, ids = build_index(pool, IndexConfig(kind="flat")).search(queries, 5)
    hits = rt.sample_hits(scores, ids, 0)
    assert len(hits) == 30  # every query finds the whole pool, nothing more
    assert sorted(np.bincount(hits.pool).tolist()) == [10, 10, 10]
    resolved = rt.resolve_collisions(hits, "best", 1)
    assert sorted(resolved.hits.pool.tolist()) == [0, 1, 2]
    assert resolved.copies.tolist() == [10, 10, 10]
    assert resolved.stats["dropped_collisions"] == 27


def test_qualifying_clusters_need_more_than_min_queries():
    query_clusters = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 2, 5])
    assert rt.qualifying_clusters(query_clusters, 3).tolist() == [0, 2]
    assert rt.qualifying_clusters(query_clusters, 2).tolist() == [0, 1, 2]
    assert rt.qualifying_clusters(query_clusters, 0).tolist() == [0, 1, 2, 5]
    assert rt.qualifying_clusters(np.array([], dtype=np.int64), 3).tolist() == []


def test_cluster_rule_takes_m_per_qualifying_cluster():
    # cluster 0: 10 pool images; cluster 1: 2; cluster 3: 6 (does not qualify);
    # cluster 4 qualifies but has no alive pool image; row 18 is unassigned.
    pool_clusters = np.array([0] * 10 + [1] * 2 + [3] * 6 + [-1])
    qualifying = np.array([0, 1, 4])
    order = np.arange(19, dtype=np.float64)[::-1]  # later rows first
    hits = rt.cluster_hits(qualifying, pool_clusters, order, per_cluster=4, dataset=2)
    assert sorted(hits.pool.tolist()) == [6, 7, 8, 9, 10, 11]
    by_pool = dict(zip(hits.pool.tolist(), hits.rank.tolist(), strict=False))
    assert by_pool == {9: 0, 8: 1, 7: 2, 6: 3, 11: 0, 10: 1}
    assert set(hits.cluster.tolist()) == {0, 1}
    assert (hits.query == -1).all() and np.isnan(hits.similarity).all()
    assert (hits.dataset == 2).all()


def test_random_selection_is_seeded_and_closest_is_exact():
    rng = np.random.default_rng(0)
    centroids = normalize(rng.standard_normal((2, 16)))
    pool = normalize(np.repeat(centroids, 50, axis=0) + 0.5 * rng.standard_normal((100, 16)))
    clusters = np.repeat([0, 1], 50)

    sims = np.einsum("ij,ij->i", pool, centroids[clusters])

    def pick(selection, seed):
        order = rt.selection_order(selection, sims, np.random.default_rng(seed))
        return sorted(rt.cluster_hits(np.array([0, 1]), clusters, order, 5, 0).pool.tolist())

    assert pick("random", 1) == pick("random", 1)
    assert pick("random", 1) != pick("random", 2)
    expected = sorted(np.argsort(-sims[:50])[:5].tolist() + (50 + np.argsort(-sims[50:])[:5]).tolist())
    assert pick("closest", 1) == pick("closest", 7) == expected


def test_cap_lowers_every_cluster_evenly():
    # three clusters with 4 selected images each (ranks 0..3), cap 7:
    # ranks 0 and 1 of all three (6), plus one rank-2 image of the cluster
    # that comes first in the tiebreak order.
    clusters = np.repeat([10, 11, 12], 4)
    hits = rt.Hits.build(np.arange(12), np.full(12, -1), np.full(12, np.nan), np.tile(np.arange(4), 3), clusters, 0)
    tiebreak = np.array([2, 0, 1])[clusters - 10]  # cluster 11 first, then 12, then 10
    capped = rt.cap_hits(hits, 7, tiebreak)
    assert capped.pool.tolist() == [0, 1, 4, 5, 6, 8, 9]
    assert rt.cap_hits(hits, None, tiebreak) is hits
    assert rt.cap_hits(hits, 20, tiebreak) is hits
    assert len(rt.cap_hits(hits, 0, tiebreak)) == 0


def test_attribute_queries_picks_most_similar_query_of_the_cluster():
    pool = np.eye(4, dtype=np.float32)
    queries = normalize(np.array([[1, 0.1, 0, 0], [0.1, 1, 0, 0], [0, 0, 1, 0], [1, 0, 0, 0.2]], np.float32))
    query_clusters = np.array([0, 0, 1, 1])
    hits = rt.Hits.build([0, 1, 3], [-1] * 3, [np.nan] * 3, [0, 1, 0], [0, 0, 1], 0)
    out = rt.attribute_queries(hits, pool, queries, query_clusters)
    # pool 0 -> query 0 (query 3 is more similar but in another cluster)
    assert out.query.tolist() == [0, 1, 3]
    np.testing.assert_allclose(out.similarity, [queries[0, 0], queries[1, 1], queries[3, 3]], rtol=1e-6)


def test_collisions_best_keeps_highest_similarity_then_earlier_dataset():
    hits = rt.Hits.concat(
        [
            _hits([5, 7, 9], [0.90, 0.50, 0.70], dataset=0),
            _hits([5, 7, 8], [0.95, 0.50, 0.60], dataset=1),
        ]
    )
    resolved = rt.resolve_collisions(hits, "best", 2)
    assert resolved.hits.pool.tolist() == [5, 7, 8, 9]
    assert resolved.hits.dataset.tolist() == [1, 0, 1, 0]  # 7: tie -> dataset 0
    assert resolved.copies.tolist() == [2, 2, 1, 1]
    assert resolved.copy.tolist() == [0, 0, 0, 0]
    stats = resolved.stats
    assert stats["hits"] == 6 and stats["unique_images"] == 4
    assert stats["collided_images"] == 2 and stats["cross_dataset_images"] == 2
    assert stats["hits_per_dataset"] == [3, 3] and stats["kept_per_dataset"] == [2, 2]
    assert stats["dropped_collisions"] == 2


def test_collisions_keep_duplicates_matches_queries_times_k():
    rng = np.random.default_rng(1)
    pool = normalize(rng.standard_normal((20, 8)))
    queries = normalize(pool[:5] + 0.01 * rng.standard_normal((5, 8)))
    scores, ids = build_index(pool, IndexConfig(kind="flat")).search(np.repeat(queries, 2, axis=0), 4)
    hits = rt.sample_hits(scores, ids, 0)
    resolved = rt.resolve_collisions(hits, "keep_duplicates", 1)
    assert len(resolved.hits) == 10 * 4  # queries x k, every collision kept
    assert resolved.stats["dropped_collisions"] == 0
    # per image: copies numbered 0..copies-1, best (highest similarity) first
    for image in np.unique(resolved.hits.pool):
        at = resolved.hits.pool == image
        assert resolved.copy[at].tolist() == list(range(at.sum()))
        assert (resolved.copies[at] == at.sum()).all()
        assert (np.diff(resolved.hits.similarity[at]) <= 0).all()


def test_same_pool_image_within_one_dataset_is_a_collision():
    hits = _hits([3, 3, 3], [0.2, 0.9, 0.4], dataset=0)
    resolved = rt.resolve_collisions(hits, "best", 1)
    assert resolved.hits.query.tolist() == [1]
    assert resolved.stats["cross_dataset_images"] == 0 and resolved.stats["collided_images"] == 1


def test_empty_inputs():
    empty = rt.Hits.empty()
    resolved = rt.resolve_collisions(empty, "best", 2)
    assert len(resolved.hits) == 0 and resolved.stats["kept_per_dataset"] == [0, 0]
    hits = rt.cluster_hits(np.array([], np.int64), np.array([0, 1]), np.zeros(2), 3, 0)
    assert len(hits) == 0
    assert (
        len(
            rt.attribute_queries(
                hits, np.zeros((2, 4), np.float32), np.zeros((0, 4), np.float32), np.array([], np.int64)
            )
        )
        == 0
    )


@pytest.mark.parametrize("policy", ["best", "keep_duplicates"])
def test_resolution_is_independent_of_input_order(policy):
    rng = np.random.default_rng(3)
    hits = rt.Hits.build(
        rng.integers(0, 30, 200),
        rng.integers(0, 50, 200),
        rng.random(200).astype(np.float32),
        rng.integers(0, 4, 200),
        np.full(200, -1),
        0,
    )
    a = rt.resolve_collisions(hits, policy, 1)
    b = rt.resolve_collisions(hits.take(rng.permutation(200)), policy, 1)
    for name in ("pool", "query", "similarity", "rank"):
        assert getattr(a.hits, name).tolist() == getattr(b.hits, name).tolist()
