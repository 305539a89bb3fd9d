"""Exact k-NN edges block by block: the same graph as one flat index over the whole pool."""

from __future__ import annotations

import numpy as np
import pytest

from curation.algorithms import components as cc
from curation.algorithms import knn, knn_blocks
from curation.index_config import IndexConfig


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


def test_inverted_lists_probed_all_equal_flat_and_few_keep_planted_groups():
    x, group = planted_descriptors(4000, 64, 400, seed=11)
    blocks = _blocks(x, 4)
    exact = knn_blocks.block_topk(x[:500], blocks, 8, len(x))
    coarse = knn_blocks.Coarse.train(x[::4], 16, 16, seed=0)
    every = knn_blocks.block_topk(x[:500], blocks, 8, len(x), coarse)
    np.testing.assert_allclose(every[0], exact[0], atol=1e-5)
    few = knn_blocks.Coarse(coarse.centroids, 4)
    listed = [(s, q, few.lists(q)) for s, q in blocks]  # lists computed once per stored vector
    out = [knn_blocks.self_graph(q, s, listed, 8, len(x), 0.6, chunk=1000, coarse=few) for s, q in blocks]
    u, v = np.concatenate([o["u"] for o in out]), np.concatenate([o["v"] for o in out])
    labels = cc.connected_components(len(x), [(u, v)])
    planted = group >= 0
    # A copy lands in its original's list or a near one: with 4 of 16 lists every planted group is found.
    assert len(np.unique(labels[planted])) == len(np.unique(group[planted]))
    assert (cc.component_sizes(labels)[~planted] == 1).all()


# Peak RSS from VmHWM: ru_maxrss survives fork and exec, so it would report the test process's peak.
_WORKER = """
import sys
from pathlib import Path
import numpy as np
from curation.algorithms import knn_blocks

root, parts = Path(sys.argv[1]), int(sys.argv[2])
sizes = [np.load(root / f"{p}.npy", mmap_mode="r").shape[0] for p in range(parts)]
starts = np.concatenate([[0], np.cumsum(sizes)])


class Stream:  # every partition file read whole, one at a time, like a helper's work files
    def __iter__(self):
        for p in range(parts):
            yield int(starts[p]), np.load(root / f"{p}.npy")


out = knn_blocks.self_graph(np.load(root / "0.npy").astype(np.float32), 0, Stream(), 16, int(starts[-1]), 0.6,
                            chunk=sizes[0])
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(int(hwm.split()[1]) * 1024, len(out["u"]))
"""


def _worker_peak(root, n: int, parts: int, dim: int = 64) -> tuple[int, int]:
    """Peak RSS of worker 0 of ``parts`` over ``n`` descriptors stored one float16 file per partition."""
    import subprocess
    import sys

    x, _ = planted_descriptors(n, dim, n // 20, seed=n)
    root.mkdir()
    for p, (a, b) in enumerate(
        zip(np.linspace(0, n, parts + 1).astype(int)[:-1], np.linspace(0, n, parts + 1).astype(int)[1:], strict=True)
    ):
        np.save(root / f"{p}.npy", x[a:b].astype(np.float16))
    done = subprocess.run(
        [sys.executable, "-c", _WORKER, str(root), str(parts)], capture_output=True, text=True, check=True
    )
    peak, edges = done.stdout.split()
    return int(peak), int(edges)


def test_worker_memory_stays_flat_when_pool_and_workers_grow_alike(tmp_path):
    n = 24_000
    small, edges_small = _worker_peak(tmp_path / "n", n, 4)
    large, edges_large = _worker_peak(tmp_path / "4n", 4 * n, 16)
    assert edges_small > 0 and edges_large > 0
    pool_bytes = 4 * n * 64 * 4  # the 4N pool as float32: what holding it would add
    assert large - small < pool_bytes // 4, (small, large)
