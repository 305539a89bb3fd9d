"""Components and decisions over touched nodes only: the same as the dense functions over every node."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from curation.algorithms import components as cc
from curation.algorithms import sparse_graph as sg
from tests.algorithms import dense_funnel


def _edges(rng, n: int, e: int) -> tuple[np.ndarray, np.ndarray]:
    """``e`` random edges among a few hundred of ``n`` nodes (most nodes untouched)."""
    hot = rng.choice(n, size=min(n, 300), replace=False)
    return hot[rng.integers(0, len(hot), e)], hot[rng.integers(0, len(hot), e)]


def _chunks(u, v, k: int = 3):
    return lambda: zip(np.array_split(u, k), np.array_split(v, k), strict=True)


def test_touched_components_are_those_of_scipy_over_every_node():
    rng = np.random.default_rng(0)
    n = 1_000_000
    u, v = _edges(rng, n, 250)
    graph = sg.touched_components(_chunks(u, v))
    assert len(graph.nodes) == len(np.unique(np.concatenate([u, v]))) < 300  # never O(n)
    adj = sp.coo_matrix((np.ones(len(u)), (u, v)), shape=(n, n))
    _, scipy_labels = connected_components(adj, directed=False)
    # Labels: the smallest node of each scipy component.
    smallest = np.full(scipy_labels.max() + 1, n)
    np.minimum.at(smallest, scipy_labels, np.arange(n))
    assert (graph.labels == smallest[scipy_labels[graph.nodes]]).all()
    assert (graph.labels == cc.connected_components(n, [(u, v)])[graph.nodes]).all()
    merged_often = sg.touched_components(_chunks(u, v, 25), batch=8)  # ids merged every few chunks
    assert (merged_often.nodes == graph.nodes).all() and (merged_often.labels == graph.labels).all()


def test_representatives_match_the_dense_choice_with_ties():
    rng = np.random.default_rng(1)
    n = 50_000
    u, v = _edges(rng, n, 200)
    rank = -rng.choice([100, 200, 300], size=n)  # keep: largest, many ties
    graph = sg.touched_components(_chunks(u, v))
    dense = cc.representatives(cc.connected_components(n, [(u, v)]), rank)
    assert (sg.representatives(graph, rank[graph.nodes]) == dense[graph.nodes]).all()


def test_expand_and_compact_skip_removed_ids():
    removed = np.array([0, 1, 5, 6, 9])
    kept = np.setdiff1d(np.arange(12), removed)
    shift = sg.shift_of(removed)
    assert (sg.expand(np.arange(len(kept)), shift) == kept).all()
    assert (sg.compact(kept, removed) == np.arange(len(kept))).all()


def test_lookup_defaults_outside_the_nodes():
    out = sg.lookup(np.array([2, 5]), np.array([20, 50]), np.array([5, 3, 2, 9]), np.array([-1, -2, -3, -4]))
    assert out.tolist() == [50, -2, 20, -4]
    assert sg.lookup(np.zeros(0, np.int64), np.zeros(0), np.array([1]), np.array([7])).tolist() == [7]


def test_decide_matches_the_dense_funnel():
    """Hash groups, copy components over the survivors and benchmark leaks: the records plus the defaults are
    exactly the dense funnel (``dense_funnel.decide``) over every node."""
    rng = np.random.default_rng(2)
    n, m = 20_000, 3
    rank = -rng.choice([1, 2, 3], size=n)
    hu, hv = _edges(rng, n, 120)
    hashed = sg.touched_components(_chunks(hu, hv))
    hash_rep = sg.representatives(hashed, rank[hashed.nodes])
    hdup = hashed.nodes[hash_rep != hashed.nodes]
    survivors = np.setdiff1d(np.arange(n), hdup)
    cu, cv = _edges(rng, len(survivors), 150)  # copy edges in survivor ids
    shift = sg.shift_of(hdup)
    copy = sg.touched_components(_chunks(sg.expand(cu, shift), sg.expand(cv, shift)))
    copy_rep = sg.representatives(copy, rank[copy.nodes])
    kept = np.setdiff1d(survivors, copy.nodes[copy_rep != copy.nodes])  # the leak graph is over these
    lu = kept[rng.integers(0, len(kept), 40)]
    lv = np.where(rng.random(40) < 0.2, n + rng.integers(0, m, 40), kept[rng.integers(0, len(kept), 40)])
    leak_nodes, leak_hit = sg.benchmark_hits(sg.touched_components(_chunks(lu, lv, 2)), n)
    rec = sg.decide(hashed.nodes, hash_rep, copy, copy_rep, leak_nodes, leak_hit)

    # The dense reference, in survivor space as dense_funnel.decide takes it.
    dense_hash = cc.representatives(cc.connected_components(n, [(hu, hv)]), rank)
    copy_labels = cc.connected_components(len(survivors), [(cu, cv)])
    n1 = len(survivors)
    lv_dense = np.where(lv >= n, lv - n + n1, sg.compact(np.minimum(lv, n - 1), hdup))
    leak_labels = cc.connected_components(n1 + m, [(sg.compact(lu, hdup), lv_dense)])
    dense = dense_funnel.decide(dense_hash, survivors, copy_labels, leak_labels, rank[survivors])
    full = {
        "status": np.zeros(n, np.int8),
        "ref": np.full(n, -1),
        "component": np.arange(n),
        "size": np.ones(n, np.int64),
        "hit": np.full(n, -1),
    }
    for name, values in full.items():
        values[rec.ids] = getattr(rec, name)
    assert (full["status"] == dense.status).all() and (full["ref"] == dense.ref).all()
    assert (full["component"] == dense.component).all() and (full["size"] == dense.component_size).all()
    assert (full["hit"] == dense.hit).all()
    assert {cc.HASH_DUPLICATE, cc.COPY_DUPLICATE, cc.BENCHMARK_LEAK} <= set(np.unique(dense.status).tolist())
    # Counts: images dropped in favour of each kept one.
    final = np.arange(n)
    copies = dense.status == cc.COPY_DUPLICATE
    final[copies] = dense.ref[copies]
    hashes = dense.status == cc.HASH_DUPLICATE
    final[hashes] = final[dense.ref[hashes]]
    count = np.where(final == np.arange(n), np.bincount(final, minlength=n) - 1, 0)
    dense_count = np.zeros(n, np.int64)
    dense_count[rec.ids] = rec.count
    assert (dense_count == count).all()
    assert len(rec.ids) < 1_000  # records for the touched images only
