"""Retrieval rules of LVD-142M: pure functions on arrays.

The pool is the ``n`` alive candidate images, indexed ``0..n-1`` by the
caller; a query dataset is ``q`` embedded curated images. Both are
L2-normalised, so inner products are cosine similarities.

- sample mode: the ``k`` nearest pool images of every query
  (:func:`sample_hits` on a kNN search).
- cluster mode: each query goes to its nearest pool centroid; every cluster
  holding MORE than ``min_queries`` queries contributes ``per_cluster`` pool
  images (:func:`cluster_hits`), chosen at random (seeded) or closest to the
  centroid; each image is attributed to its most similar query of that
  cluster (:func:`attribute_queries`).
- a per-dataset ``cap`` keeps the hits of lowest rank first
  (:func:`cap_hits`): in cluster mode that lowers every cluster's share
  evenly instead of dropping whole clusters.
- collisions, one pool image hit several times, are resolved over all
  datasets at once (:func:`resolve_collisions`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal

import numpy as np

CollisionPolicy = Literal["best", "keep_duplicates"]
Selection = Literal["random", "closest"]


@dataclass
class Hits:
    """Columnar (query, pool image) matches; every array has shape (h,).

    - ``pool`` int64: candidate row of the pool image.
    - ``query`` int64: row of the query in its dataset.
    - ``similarity`` float32: cosine similarity of pool image and query.
    - ``rank`` int32: sample mode: neighbour rank for the query (0 =
      nearest); cluster mode: position in the cluster's selection order.
    - ``cluster`` int64: pool cluster of the image (-1: unknown).
    - ``dataset`` int32: index of the query dataset (retrieval entry).
    """

    pool: np.ndarray
    query: np.ndarray
    similarity: np.ndarray
    rank: np.ndarray
    cluster: np.ndarray
    dataset: np.ndarray

    def __len__(self) -> int:
        return int(self.pool.shape[0])

    def take(self, rows: np.ndarray) -> Hits:
        return Hits(*(getattr(self, f.name)[rows] for f in fields(self)))

    @staticmethod
    def empty() -> Hits:
        return Hits.build(
            np.zeros(0, np.int64),
            np.zeros(0, np.int64),
            np.zeros(0, np.float32),
            np.zeros(0, np.int32),
            np.zeros(0, np.int64),
            0,
        )

    @staticmethod
    def build(pool, query, similarity, rank, cluster, dataset: int) -> Hits:
        pool = np.asarray(pool, dtype=np.int64)
        return Hits(
            pool,
            np.asarray(query, dtype=np.int64),
            np.asarray(similarity, dtype=np.float32),
            np.asarray(rank, dtype=np.int32),
            np.asarray(cluster, dtype=np.int64),
            np.full(pool.shape[0], dataset, dtype=np.int32),
        )

    @staticmethod
    def concat(parts: list[Hits]) -> Hits:
        if not parts:
            return Hits.empty()
        return Hits(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(Hits)))


def sample_hits(scores: np.ndarray, ids: np.ndarray, dataset: int, pool_clusters: np.ndarray | None = None) -> Hits:
    """Hits of a kNN search: ``scores``/``ids`` (q, k), ids ``-1`` where the
    pool had fewer than ``k`` candidates (those slots are skipped)."""
    q, k = ids.shape
    valid = ids >= 0
    query = np.broadcast_to(np.arange(q, dtype=np.int64)[:, None], (q, k))[valid]
    rank = np.broadcast_to(np.arange(k, dtype=np.int32)[None, :], (q, k))[valid]
    pool = ids[valid]
    cluster = pool_clusters[pool] if pool_clusters is not None else np.full(pool.shape, -1)
    return Hits.build(pool, query, scores[valid], rank, cluster, dataset)


def qualifying_clusters(query_clusters: np.ndarray, min_queries: int) -> np.ndarray:
    """Sorted ids of the clusters holding MORE than ``min_queries`` queries."""
    ids, counts = np.unique(np.asarray(query_clusters, dtype=np.int64), return_counts=True)
    return ids[counts > min_queries]


def selection_order(selection: Selection, closeness: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per-candidate sort key (n,): lower is picked first within its cluster.

    ``random``: uniform draws from ``rng``; ``closest``: minus ``closeness``
    (n,), the candidate's similarity to its own centroid.
    """
    if selection == "random":
        return rng.random(len(closeness))
    return -np.asarray(closeness, dtype=np.float64)


def cluster_hits(
    qualifying: np.ndarray, pool_clusters: np.ndarray, order: np.ndarray, per_cluster: int, dataset: int
) -> Hits:
    """The first ``per_cluster`` candidates (by ``order``, then row) of every
    qualifying cluster. ``pool_clusters`` (n,) int, -1 for unassigned rows.

    Clusters with fewer alive candidates give all they have; empty ones none.
    Queries are not attributed yet (``query`` -1, ``similarity`` NaN).
    """
    from curation.algorithms.hkmeans import rank_in_group

    rows = np.flatnonzero(np.isin(pool_clusters, qualifying) & (pool_clusters >= 0))
    clusters = pool_clusters[rows]
    # rank_in_group ranks the highest priority first, ties in row order.
    rank = rank_in_group(clusters, -order[rows])
    keep = rank < per_cluster
    h = int(keep.sum())
    return Hits.build(rows[keep], np.full(h, -1), np.full(h, np.nan), rank[keep], clusters[keep], dataset)


def attribute_queries(hits: Hits, pool: np.ndarray, queries: np.ndarray, query_clusters: np.ndarray) -> Hits:
    """Fill ``query``/``similarity`` of cluster hits with the most similar
    query of the same cluster. ``pool`` (n, d), ``queries`` (q, d) and
    ``query_clusters`` (q,) as given to the cluster rule."""
    query = hits.query.copy()
    similarity = hits.similarity.copy()
    by_cluster = np.argsort(query_clusters, kind="stable")
    q_sorted = query_clusters[by_cluster]
    for cluster in np.unique(hits.cluster):
        members = by_cluster[np.searchsorted(q_sorted, cluster) : np.searchsorted(q_sorted, cluster, "right")]
        at = np.flatnonzero(hits.cluster == cluster)
        if members.size == 0:
            continue
        sims = pool[hits.pool[at]] @ queries[members].T
        best = np.argmax(sims, axis=1)
        query[at] = members[best]
        similarity[at] = sims[np.arange(at.size), best]
    return Hits(hits.pool, query, similarity, hits.rank, hits.cluster, hits.dataset)


def cap_hits(hits: Hits, cap: int | None, tiebreak: np.ndarray) -> Hits:
    """At most ``cap`` hits: lowest ``rank`` first, then lowest ``tiebreak``
    (h,), then lowest pool row. Kept hits stay in their input order."""
    if cap is None or len(hits) <= cap:
        return hits
    order = np.lexsort((hits.pool, tiebreak, hits.rank))
    return hits.take(np.sort(order[:cap]))


@dataclass
class Resolved:
    """Hits after collision resolution, sorted by pool row then best first.

    ``copies`` (h,) int32: hits on that pool image before resolution;
    ``copy`` (h,) int32: 0 for the best hit of an image, 1, 2... for the
    duplicates kept by ``keep_duplicates``.
    """

    hits: Hits
    copies: np.ndarray
    copy: np.ndarray
    stats: dict


def resolve_collisions(hits: Hits, policy: CollisionPolicy, num_datasets: int) -> Resolved:
    """One pool image hit several times (by queries of one dataset or of
    several) is a collision. ``best`` keeps one hit per image: the highest
    similarity, ties to the lower dataset index, then query row, then rank.
    ``keep_duplicates`` keeps every hit (the counts of the paper's Table 15).
    """
    order = np.lexsort((hits.rank, hits.query, hits.dataset, -hits.similarity.astype(np.float64), hits.pool))
    ranked = hits.take(order)
    first = np.r_[True, ranked.pool[1:] != ranked.pool[:-1]] if len(ranked) else np.zeros(0, bool)
    starts = np.flatnonzero(first)
    counts = np.diff(np.r_[starts, len(ranked)]).astype(np.int32)
    copies = np.repeat(counts, counts)
    copy = (np.arange(len(ranked)) - np.repeat(starts, counts)).astype(np.int32)
    keep = first if policy == "best" else np.ones(len(ranked), dtype=bool)
    stats = collision_stats(ranked, first, counts, keep, num_datasets)
    return Resolved(ranked.take(keep), copies[keep], copy[keep], stats)


def collision_stats(ranked: Hits, first: np.ndarray, counts: np.ndarray, keep: np.ndarray, num_datasets: int) -> dict:
    """Counts behind the collision report; per-dataset lists are indexed by dataset."""
    image_of_hit = np.cumsum(first) - 1
    datasets_per_image = np.zeros(counts.shape[0], dtype=np.int64)
    if len(ranked):
        # One int64 per (image, dataset) pair: a 1-D unique is much faster than unique(axis=1).
        pairs = np.unique(image_of_hit * max(num_datasets, 1) + ranked.dataset)
        datasets_per_image = np.bincount(pairs // max(num_datasets, 1), minlength=counts.shape[0])
    return {
        "hits": len(ranked),
        "unique_images": int(counts.shape[0]),
        "collided_images": int((counts > 1).sum()),
        "cross_dataset_images": int((datasets_per_image > 1).sum()),
        "hits_per_dataset": np.bincount(ranked.dataset, minlength=num_datasets).tolist(),
        "kept_per_dataset": np.bincount(ranked.dataset[keep], minlength=num_datasets).tolist(),
        "dropped_collisions": int((~keep).sum()),
    }
