"""The dedup graph step on a synthetic pool with planted duplicate groups (features written directly).

Decisions are the same with 1, 2 and 4 helpers and equal an independent reference: every pair of codes
within the Hamming radius and every pair of survivors above the copy threshold, scipy connected
components, and the keep policy in plain numpy. The graph process's held arrays grow with the images
that pairs and edges touch, not with the pool.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from curation import tables
from curation.algorithms.knn import unit_rows
from curation.stages.dedup.pool import Pool
from tests.stages.dedup import synthetic as ds

pytestmark = pytest.mark.slow
PARTS, PER_PART, GROUPS = 4, 300, 20


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("graph")
    ds.write_features(root / "src", PARTS, PER_PART, GROUPS)
    return root


def _components(n: int, pairs: np.ndarray) -> np.ndarray:
    """Scipy components, labelled by the smallest member."""
    adj = sp.coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, labels = connected_components(adj, directed=False)
    smallest = np.full(labels.max() + 1, n)
    np.minimum.at(smallest, labels, np.arange(n))
    return smallest[labels]


def _kept(labels: np.ndarray, area: np.ndarray) -> np.ndarray:
    """Per node, its component's largest image, ties to the first."""
    out = np.arange(len(labels))
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        out[members] = members[np.argmax(area[members])]  # argmax: the first of the largest
    return out


def _reference(run, table):
    pool = Pool(run / "stages/dedup/features")
    n, keys = len(pool), np.array(pool.keys.to_pylist())
    assert table.column("key").to_pylist() == keys.tolist()
    codes = np.stack([np.frombuffer(c, np.uint8) for c in table.column("hash_code").to_pylist()])
    bits = np.unpackbits(codes, axis=1).astype(np.int32)
    distance = bits.sum(1)[:, None] + bits.sum(1)[None] - 2 * bits @ bits.T
    i, j = np.nonzero(np.triu(distance <= 4, 1))
    hash_kept = _kept(_components(n, np.stack([i, j], 1)), pool.area)
    survivors = np.flatnonzero(hash_kept == np.arange(n))
    x = unit_rows(pool.gather("desc.npy", survivors)).astype(np.float16).astype(np.float32)
    i, j = np.nonzero(np.triu(x @ x.T > 0.9, 1))
    copy_labels = _components(len(survivors), np.stack([i, j], 1))
    copy_kept = survivors[_kept(copy_labels, pool.area[survivors])]
    return keys, distance, hash_kept, survivors, survivors[copy_labels], copy_kept


def test_decisions_equal_across_helpers_and_the_reference(synthetic, tmp_path):
    runs = {
        w: ds.rerun_graph(synthetic / "src", tmp_path / f"w{w}", ds.config(synthetic / "src", w)) for w in (1, 2, 4)
    }
    one = ds.decisions(runs[1])
    for w in (2, 4):
        assert ds.decisions(runs[w]).equals(one), w
    keys, distance, hash_kept, survivors, copy_label, copy_kept = _reference(runs[1], one)
    rows = one.to_pydict()
    status = np.array(rows["status"])
    expected = np.full(len(keys), tables.SUCCESS, object)
    expected[hash_kept != np.arange(len(keys))] = "duplicate_hash"
    expected[survivors[copy_kept != survivors]] = "duplicate_copy"
    assert (status == expected).all()
    assert 30 <= (status == "duplicate_hash").sum() and 20 <= (status == "duplicate_copy").sum()  # planted
    final = hash_kept.copy()
    final[survivors] = copy_kept
    final = final[final]  # a hash group's kept image may be a copy
    dup = np.flatnonzero(status != tables.SUCCESS)
    ref = hash_kept.copy()
    ref[survivors] = copy_kept  # what each duplicate's row names: its hash group's or copy component's kept image
    assert [rows["duplicate_of"][i] for i in dup] == keys[ref[dup]].tolist()
    hashed = np.flatnonzero(status == "duplicate_hash")
    assert [rows["duplicate_distance"][i] for i in hashed] == distance[hashed, hash_kept[hashed]].tolist()
    count = np.bincount(final, minlength=len(keys)) - 1
    assert rows["duplicate_count"] == np.where(final == np.arange(len(keys)), count, 0).tolist()
    component = np.full(len(keys), -1)
    component[survivors] = copy_label
    assert [c if c is not None else -1 for c in rows["copy_component"]] == component.tolist()
    funnel = json.loads((runs[1] / "stages/dedup/graph/funnel.json").read_text())
    assert funnel["described"] == len(keys) and funnel["input"] == PARTS * (PER_PART + 1)
    assert funnel["after_self_dedup"] == int((status == tables.SUCCESS).sum())


def test_graph_process_holds_touched_images_only(tmp_path):
    """N images with 1 helper, then 4N with 4 helpers and the same planted groups: the graph process's held
    bytes (its own accounting) and its traced peak (helpers excluded) follow the touched images (a few per
    cent of N), not the pool. Before, it held ~180 bytes per image: 540 KB more at 4N than at N here."""
    ds.write_features(tmp_path / "warm", 2, 50, 2)
    ds.traced_graph(tmp_path / "warm", tmp_path / "warm-run", ds.config(tmp_path / "warm", 2))  # imports
    held, peak = {}, {}
    for label, parts, helpers in (("n", 4, 1), ("4n", 16, 4)):
        src = tmp_path / f"{label}-src"
        ds.write_features(src, parts, 250, GROUPS, seed=1)
        cfg = ds.config(src, helpers, copy_dedup={"enabled": True, "threshold": 0.95, "k": 8})
        run, peak[label] = ds.traced_graph(src, tmp_path / label, cfg)
        held[label] = json.loads((run / "stages/dedup/graph/_SUCCESS.json").read_text())["held"]
        assert 0 < held[label]["touched"] < 0.2 * parts * 250
        assert held[label]["bytes"] <= 100 * held[label]["touched"]  # tens of bytes per touched image
    assert held["4n"]["touched"] < 1.5 * held["n"]["touched"]
    assert held["4n"]["bytes"] < 1.5 * held["n"]["bytes"], held
    assert peak["4n"] - peak["n"] < 150_000, peak  # 3,000 more images: < 50 B each, tables read in passing included
