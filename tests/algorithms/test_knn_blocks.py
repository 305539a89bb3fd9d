"""Exact k-NN edges block by block: the same graph as one flat index over the whole pool."""

from __future__ import annotations

import numpy as np
import pytest

from curation.algorithms import components as cc
from curation.algorithms import knn, knn_blocks
from curation.algorithms.index import IndexConfig


def planted_descriptors(n: int, dim: int, groups: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit rows; ``groups`` planted groups of 2-4 noisy copies (cosine > 0.8). Returns ``(x, group)``."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim)).astype(np.float32)
    sizes = rng.integers(2, 5, groups)
    members = rng.permutation(n)[: sizes.sum()]
    group = np.full(n, -1)
    group[members] = np.repeat(np.arange(groups), sizes)
    source = rng.standard_normal((groups, dim)).astype(np.float32)
    x[members] = source[group[members]] + 0.2 * rng.standard_normal((len(members), dim))
    return x / np.linalg.norm(x, axis=1, keepdims=True), group


def _blocks(x: np.ndarray, parts: int) -> list[tuple[int, np.ndarray]]:
    cuts = np.linspace(0, len(x), parts + 1).astype(np.int64)
    return [(int(a), x[a:b]) for a, b in zip(cuts[:-1], cuts[1:], strict=True)]


def distributed_graph(x: np.ndarray, parts: int, k: int, threshold: float) -> dict[str, np.ndarray]:
    """Every worker's part (its block as queries, all blocks streamed), concatenated in pool order."""
    blocks = _blocks(x, parts)
    out = [knn_blocks.self_graph(q, start, blocks, k, len(x), threshold, chunk=700) for start, q in blocks]
    return {name: np.concatenate([o[name] for o in out]) for name in out[0]}


@pytest.mark.parametrize("parts", [1, 2, 4])
def test_equal_to_one_flat_index(parts):
    x, group = planted_descriptors(3000, 128, 300, seed=parts)
    flat = knn.copy_graph(x, x[:0], IndexConfig(kind="flat"), 8, 0.6, 0, 1.0)
    got = distributed_graph(x, parts, 8, 0.6)
    labels = cc.connected_components(len(x), [(got["u"], got["v"])])
    assert (labels == flat.labels).all()
    assert (got["nearest"] == flat.nearest).all()
    np.testing.assert_allclose(got["nearest_sim"], flat.nearest_sim, atol=1e-5)
    # Planted groups are the components (noise rows stay singletons).
    planted = group >= 0
    assert len(np.unique(labels[planted])) == len(np.unique(group[planted]))
    assert (cc.component_sizes(labels)[~planted] == 1).all()
    assert (got["sim"] > 0.6).all() and len(got["u"]) > 0


def test_top_k_over_blocks_equals_one_search():
    x, _ = planted_descriptors(2000, 16, 100, seed=7)
    q = x[:300]
    import faiss

    index = faiss.IndexFlatIP(16)
    index.add(x)
    sims, ids = index.search(q, 10)
    got_sims, got_ids = knn_blocks.block_topk(q, _blocks(x, 5), 10, len(x))
    np.testing.assert_allclose(got_sims, sims, atol=1e-5)
    assert (got_ids == ids).mean() > 0.999  # ties aside
    # k above the pool size is capped; empty blocks are skipped.
    s, i = knn_blocks.block_topk(q[:3], [(0, x[:4]), (4, x[4:4])], 10, 4)
    assert s.shape == (3, 4) and set(i[0].tolist()) == {0, 1, 2, 3}


def test_merge_candidates_keeps_the_global_top_k():
    # Benchmark -> pool: each worker's local top 2; the merge keeps the best 2 per query overall.
    u = np.array([0, 0, 0, 0, 1, 1])
    v = np.array([5, 9, 2, 7, 3, 4])
    sim = np.array([0.9, 0.5, 0.95, 0.5, 0.7, 0.8], np.float32)
    mu, mv = knn_blocks.merge_candidates(u, v, sim, 2)
    assert list(zip(mu.tolist(), mv.tolist(), strict=True)) == [(0, 2), (0, 5), (1, 4), (1, 3)]
    mu, mv = knn_blocks.merge_candidates(u, v, sim, 3)
    found = set(zip(mu.tolist(), mv.tolist(), strict=True))
    assert (0, 7) in found and (0, 9) not in found
