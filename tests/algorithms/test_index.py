"""The Faiss index factory: exact agreement with brute force, IVF recall."""

from __future__ import annotations

import numpy as np
import pytest

from curation.algorithms import index as ix
from curation.errors import ConfigError
from curation.index_config import IndexConfig


def clustered(n: int, d: int = 32, centers: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """L2-normalised points around ``centers`` directions, and queries near them."""
    rng = np.random.default_rng(seed)
    c = ix.normalize(rng.standard_normal((centers, d)))
    pool = ix.normalize(c[rng.integers(0, centers, n)] + 0.1 * rng.standard_normal((n, d)))
    queries = ix.normalize(c[rng.integers(0, centers, 200)] + 0.1 * rng.standard_normal((200, d)))
    return pool, queries


def brute_force(pool: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    sims = queries @ pool.T
    ids = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, ids, axis=1), ids


def test_flat_matches_brute_force_exactly():
    pool, queries = clustered(3000)
    index = ix.build_index(pool, IndexConfig())  # auto: exact below exact_max
    assert index.kind == "flat" and index.ntotal == 3000 and not index.on_gpu
    scores, ids = index.search(queries, 10)
    want_scores, want_ids = brute_force(pool, queries, 10)
    assert (ids == want_ids).all()
    np.testing.assert_allclose(scores, want_scores, atol=1e-5)


def test_flat_search_in_batches_is_the_same():
    pool, queries = clustered(500)
    whole = ix.build_index(pool, IndexConfig(kind="flat")).search(queries, 5)
    batched = ix.build_index(pool, IndexConfig(kind="flat", search_batch=7)).search(queries, 5)
    assert (whole[1] == batched[1]).all()


def test_l2_metric_and_float16_memmap_input(tmp_path):
    pool, queries = clustered(400)
    path = tmp_path / "pool.npy"
    np.save(path, pool.astype(np.float16))
    mapped = np.load(path, mmap_mode="r")
    scores, ids = ix.build_index(mapped, IndexConfig(kind="flat"), metric="l2", chunk=64).search(queries, 3)
    half = mapped.astype(np.float32)
    dist = ((queries[:, None, :] - half[None]) ** 2).sum(-1)
    assert (ids == np.argsort(dist, axis=1, kind="stable")[:, :3]).all()


def test_ivf_flat_exhaustive_probe_is_exact_and_partial_probe_recall():
    pool, queries = clustered(4000)
    _, truth = brute_force(pool, queries, 10)
    full = ix.build_index(pool, IndexConfig(kind="ivf_flat", nlist=16, nprobe=16))
    assert full.kind == "ivf_flat"
    assert ix.recall_at_k(full.search(queries, 10)[1], truth) == 1.0
    partial = ix.build_index(pool, IndexConfig(kind="ivf_flat", nlist=16, nprobe=1))
    recall = ix.recall_at_k(partial.search(queries, 10)[1], truth)
    print(f"ivf_flat nlist=16 nprobe=1 recall@10={recall:.3f}")
    assert 0.8 <= recall <= 1.0


def test_ivf_pq_refined_recall_and_determinism():
    pool, queries = clustered(4000)
    _, truth = brute_force(pool, queries, 10)
    config = IndexConfig(kind="ivf_pq", nlist=16, nprobe=16, pq_m=8, pq_bits=6, refine_k_factor=8)
    index = ix.build_index(pool, config, seed=3)
    scores, ids = index.search(queries, 10)
    recall = ix.recall_at_k(ids, truth)
    # the same index without re-ranking: its PQ base alone
    raw_recall = ix.recall_at_k(index.index.base_index.search(queries, 10)[1], truth)
    print(f"ivf_pq recall@10 refined={recall:.3f} codes only={raw_recall:.3f}")
    assert recall >= 0.9 and recall >= raw_recall
    # re-ranked scores are exact inner products
    np.testing.assert_allclose(scores, np.einsum("qd,qkd->qk", queries, pool[ids]), atol=1e-5)
    again = ix.build_index(pool, config, seed=3).search(queries, 10)
    assert (again[1] == ids).all()


def test_auto_kind_and_defaults():
    config = IndexConfig(exact_max=100)
    assert ix.resolve_kind(100, config) == "flat"
    assert ix.resolve_kind(101, config) == "ivf_pq"
    assert ix.resolve_kind(10, IndexConfig(kind="ivf_flat")) == "ivf_flat"
    assert ix.default_nlist(1_000_000) == 4000
    assert ix.default_nlist(1000) == 25  # at least 39 training points per list
    assert ix.default_nlist(10) == 1
    assert ix.default_pq_m(1280) == 64 and ix.default_pq_m(768) == 96 and ix.default_pq_m(32) == 8


def test_config_errors():
    pool, _ = clustered(200)
    with pytest.raises(ConfigError, match="pq_m"):
        ix.build_index(pool, IndexConfig(kind="ivf_pq", nlist=2, pq_m=5))
    with pytest.raises(ConfigError, match="use_gpu"):
        ix.build_index(pool, IndexConfig(use_gpu=True))


def test_empty_pool_returns_no_neighbours():
    index = ix.build_index(np.zeros((0, 8), np.float32), IndexConfig(kind="ivf_pq"))
    assert index.kind == "flat"
    scores, ids = index.search(np.ones((2, 8), np.float32), 3)
    assert (ids == -1).all()


def test_recall_at_k():
    assert ix.recall_at_k(np.array([[1, 2, 3]]), np.array([[3, 4, 1]])) == pytest.approx(2 / 3)
    assert ix.recall_at_k(np.zeros((0, 3), int), np.zeros((0, 3), int)) == 1.0
