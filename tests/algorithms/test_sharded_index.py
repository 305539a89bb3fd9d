"""The sharded pool index: exact shards equal one exact index; IVF shards keep recall."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from curation.algorithms.index import build_index, normalize, recall_at_k
from curation.algorithms.sharded_index import IndexShard, RowsView, ShardedIndex, merge_topk, shard_ranges
from curation.index_config import IndexConfig
from curation.runner.workers import LocalWorkers
from curation.stages.base import Resources

D = 32


def _pool(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = normalize(rng.standard_normal((50, D)))
    return normalize(centres[rng.integers(0, 50, n)] + 0.4 * rng.standard_normal((n, D)))


class _Slice(IndexShard):
    """A shard over rows ``lo:hi`` of a module-level pool, as a worker would build it."""

    pool: np.ndarray = np.zeros((0, D), np.float32)

    def __init__(self, lo: int, hi: int, config: IndexConfig, grant=None):
        super().__init__(self.pool[lo:hi], config, "ip", seed=0)


def _sharded(x: np.ndarray, cuts: list[int], config: IndexConfig, batch: int = 64) -> ShardedIndex:
    _Slice.pool = x
    args = [(lo, hi, config) for lo, hi in zip(cuts[:-1], cuts[1:], strict=False)]
    group = LocalWorkers().start(_Slice, args, Resources(), "Shard")
    return ShardedIndex(group, [hi - lo for lo, hi, _ in args], "ip", batch)


def _exact(x: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores and ids of one exact inner-product index over the whole pool: the reference."""
    flat = faiss.IndexFlatIP(D)
    flat.add(x)
    return flat.search(queries, k)


@pytest.mark.parametrize(
    "cuts",
    [[0, 3000], [0, 1500, 3000], [0, 750, 1500, 2250, 3000], [0, 5, 2900, 2950, 3000]],
    ids=["1", "2", "4", "uneven"],
)
def test_exact_sharded_search_equals_one_flat_index(cuts):
    x = _pool(3000)
    queries = _pool(200, seed=1)
    want_scores, want_ids = _exact(x, queries, 10)
    scores, ids = _sharded(x, cuts, IndexConfig(kind="flat")).search(queries, 10)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_array_equal(scores, want_scores)


def test_k_larger_than_a_shard_and_than_the_pool():
    x = _pool(30)
    index = _sharded(x, [0, 3, 30], IndexConfig(kind="flat"))
    scores, ids = index.search(_pool(4, seed=2), 50)
    assert ids.shape == (4, 30)  # k is capped at the pool size
    assert sorted(ids[0].tolist()) == list(range(30))
    assert np.all(np.diff(scores, axis=1) <= 0)


def test_ivf_shards_reach_the_recall_of_one_ivf_index():
    x = _pool(8000)
    queries = _pool(300, seed=3)
    _, truth = _exact(x, queries, 10)
    config = IndexConfig(kind="ivf_flat", nlist=32, nprobe=4)
    _, single = build_index(x, config, "ip", 0).search(queries, 10)
    # The same settings in every shard: as many vectors scanned per query in total.
    _, sharded = _sharded(x, [0, 2000, 4000, 6000, 8000], config).search(queries, 10)
    single_recall, sharded_recall = recall_at_k(single, truth), recall_at_k(sharded, truth)
    assert 0.3 < single_recall < 1.0  # approximate, so the comparison means something
    assert sharded_recall >= single_recall - 0.02


@pytest.mark.parametrize("kind", ["ivf_sq8", "ivf_fp16", "ivf_pq"])
def test_quantised_shards_re_rank_to_high_recall(kind):
    x = _pool(4000)
    queries = _pool(100, seed=4)
    _, truth = _exact(x, queries, 5)
    config = IndexConfig(kind=kind, nlist=16, nprobe=16, pq_m=8)
    _, ids = _sharded(x, [0, 1000, 4000], config).search(queries, 5)
    assert recall_at_k(ids, truth) > 0.8


def test_take_gathers_vectors_by_global_id():
    x = _pool(100)
    index = _sharded(x, [0, 10, 60, 100], IndexConfig(kind="flat"))
    ids = np.array([99, 0, 10, 59, 60, 5])
    np.testing.assert_array_equal(index.take(ids), x[ids])


def test_merge_topk_keeps_the_best_and_marks_missing_slots():
    a = (np.array([[0.9, 0.1]], np.float32), np.array([[3, 1]]))
    b = (np.array([[0.5]], np.float32), np.array([[7]]))
    scores, ids = merge_topk([a, b], 4)
    assert ids.tolist() == [[3, 7, 1, -1]]
    np.testing.assert_allclose(scores[0, :3], [0.9, 0.5, 0.1])


def test_shard_ranges_are_contiguous_non_empty_and_balanced():
    assert shard_ranges([5, 5, 5, 5], 2) == [(0, 2), (2, 4)]
    assert shard_ranges([100, 1, 1, 1], 2) == [(0, 1), (1, 4)]
    assert shard_ranges([1, 2], 4) == [(0, 1), (1, 2)]  # never more shards than partitions
    assert shard_ranges([], 3) == []
    ranges = shard_ranges([10] * 13, 4)
    assert ranges[0][0] == 0 and ranges[-1][1] == 13
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False))
    assert max(hi - lo for lo, hi in ranges) - min(hi - lo for lo, hi in ranges) <= 1


def test_rows_view_reads_the_selected_rows_of_each_part():
    a, b = _pool(10), _pool(6, seed=5)
    view = RowsView([(a, np.array([1, 4, 7])), (b, np.array([0, 5]))], D)
    want = np.concatenate([a[[1, 4, 7]], b[[0, 5]]])
    assert view.shape == (5, D)
    np.testing.assert_array_equal(view[1:4], want[1:4])
    np.testing.assert_array_equal(view[np.array([0, 4])], want[[0, 4]])
    np.testing.assert_array_equal(np.asarray(view), want)
