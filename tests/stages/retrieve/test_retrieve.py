"""The retrieve stage in-process on a synthetic upstream run directory."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from curation import config as cfg
from curation import tables
from curation.atomic import read_json
from curation.errors import ConfigError
from curation.runner.local import run_stages
from tests.stages.retrieve import retrieval_upstream as up


def _setup(tmp_path, queries: dict[str, np.ndarray]):
    run_dir = tmp_path / "run"
    up.build(run_dir)
    curated = []
    for name, x in queries.items():
        folder = tmp_path / "sets" / name
        folder.mkdir(parents=True)
        curated.append({"name": name, "path": str(folder)})
        up.write_curated(run_dir, name, x)
    return run_dir, curated


def _selected(run_dir):
    files = sorted((run_dir / "stages/retrieve/search/selected").glob("part-*.parquet"))
    assert [f.name for f in files] == [f"part-{p:06d}.parquet" for p in range(up.PARTITIONS)]
    return pq.read_table(files).to_pylist() if files else []


def _mark(run_dir):
    parts = sorted((run_dir / "stages/retrieve/mark").glob("part-*.parquet"))
    return [pq.read_table(p) for p in parts]


def test_sample_and_cluster_modes_end_to_end(tmp_path):
    keys, x, clusters = up.alive_vectors()
    # sample queries: slightly moved copies of five pool samples
    picks = [0, 9, 17, 30, 41]
    near = up.unit(x[picks] + 0.01 * np.random.default_rng(1).standard_normal((5, up.DIM)))
    # cluster queries: 4 in cluster 1 (qualifies: more than 3), 2 in cluster 2 (does not)
    cq = up.unit(up.centroids()[[1, 1, 1, 1, 2, 2]] + 0.05 * np.random.default_rng(2).standard_normal((6, up.DIM)))
    run_dir, curated = _setup(tmp_path, {"near": near, "topics": cq})
    retrieve = {
        "datasets": [
            {"name": "near_knn", "source": "near", "mode": "sample", "k": 3},
            {
                "name": "topics_cluster",
                "source": "topics",
                "mode": "cluster",
                "per_cluster": 5,
                "min_queries": 3,
                "cap": 4,
                "selection": "closest",
            },
        ],
        "collisions": "keep_duplicates",
    }
    run_stages(run_dir, up.pipeline(run_dir, curated, retrieve), ["retrieve"])

    rows = _selected(run_dir)
    knn = [r for r in rows if r["dataset"] == "near_knn"]
    brute = np.argsort(-(near @ x.T), axis=1, kind="stable")[:, :3]
    want = sorted((q, keys[j], rank) for q, row in enumerate(brute) for rank, j in enumerate(row))
    got = sorted((int(r["query_key"].rsplit("-", 1)[1]), r["key"], r["rank"]) for r in knn)
    assert got == want  # exact index: the brute-force neighbours, ranks included
    assert all(r["mode"] == "sample" and r["query_dataset"] == "near" for r in knn)
    assert {(int(r["query_key"][-1]), r["rank"]): r["key"] for r in knn}[(0, 0)] == keys[picks[0]]

    topics = [r for r in rows if r["dataset"] == "topics_cluster"]
    in_cluster_1 = [i for i in range(len(keys)) if clusters[i] == 1]
    closeness = np.einsum("ij,j->i", x[in_cluster_1], up.centroids()[1])
    want_keys = sorted(keys[in_cluster_1[j]] for j in np.argsort(-closeness)[:4])
    assert sorted(r["key"] for r in topics) == want_keys  # cap 4 of per_cluster 5, closest first
    assert {r["cluster"] for r in topics} == {1}
    for r in topics:  # attributed to the most similar query of cluster 1
        q = int(r["query_key"].rsplit("-", 1)[1])
        sims = cq[:4] @ x[keys.index(r["key"])]
        assert q == int(np.argmax(sims)) and r["similarity"] == pytest.approx(sims.max(), abs=1e-5)
    assert len(rows) == 5 * 3 + 4  # keep_duplicates: queries x k, plus the cluster images

    summary = read_json(run_dir / "stages/retrieve/search/summary.json")
    by_name = {d["name"]: d for d in summary["datasets"]}
    assert by_name["topics_cluster"]["qualifying_clusters"] == 1
    assert by_name["topics_cluster"]["hits"] == 5 and by_name["topics_cluster"]["after_cap"] == 4
    assert by_name["near_knn"]["hits"] == 15

    # the stage table: every pool sample once, one terminal status each
    marks = _mark(run_dir)
    assert [t.num_rows for t in marks] == [up.ROWS] * up.PARTITIONS
    selected_keys = {r["key"] for r in rows}
    for p, table in enumerate(marks):
        for r, row in enumerate(table.to_pylist()):
            assert row["key"] == tables.sample_key(p, r)
            if up.dropped(r):
                assert (row["status"], row["dropped_by"]) == ("duplicate_copy", "dedup")
            elif row["key"] in selected_keys:
                assert row["status"] == "success" and row["dataset"] in ("near_knn", "topics_cluster")
                assert row["copies"] >= 1 and row["query_key"] is not None
            else:
                assert (row["status"], row["dropped_by"], row["dataset"]) == ("not_retrieved", "retrieve", None)


def test_best_policy_resolves_collisions_across_datasets(tmp_path):
    keys, x, _ = up.alive_vectors()
    same = x[[3, 4]]
    run_dir, curated = _setup(tmp_path, {"first": same, "second": same})
    retrieve = {
        "datasets": [
            {"name": "a", "source": "first", "mode": "sample", "k": 2},
            {"name": "b", "source": "second", "mode": "sample", "k": 2},
        ]
    }
    run_stages(run_dir, up.pipeline(run_dir, curated, retrieve), ["retrieve"])
    rows = _selected(run_dir)
    assert len({r["key"] for r in rows}) == len(rows)  # one copy per image
    assert {r["dataset"] for r in rows} == {"a"}  # equal similarities: earlier entry wins
    assert keys[3] in {r["key"] for r in rows} and keys[4] in {r["key"] for r in rows}
    summary = read_json(run_dir / "stages/retrieve/search/summary.json")
    assert summary["collisions"]["cross_dataset_images"] == len(rows)
    assert [d["selected"] for d in summary["datasets"]] == [len(rows), 0]


def test_k_and_query_set_larger_than_pool_and_empty_qualifying_cluster(tmp_path):
    keys, x, clusters = up.alive_vectors()
    empty = up.CLUSTERS  # a centroid without pool samples
    queries = up.unit(up.centroids()[[empty] * 5])
    many = up.unit(np.random.default_rng(5).standard_normal((100, up.DIM)))  # more queries than pool images
    run_dir, curated = _setup(tmp_path, {"far": queries, "many": many})
    retrieve = {
        "datasets": [
            {"name": "everything", "source": "many", "mode": "sample", "k": 1000},
            {"name": "nothing", "source": "far", "mode": "cluster", "per_cluster": 10},
        ],
        "collisions": "keep_duplicates",
    }
    run_stages(run_dir, up.pipeline(run_dir, curated, retrieve), ["retrieve"])
    rows = _selected(run_dir)
    # k > pool: every query gets the whole alive pool; every image hit once per query
    assert len(rows) == 100 * len(keys)
    assert {r["key"] for r in rows} == set(keys)
    assert {r["copies"] for r in rows} == {100} and sorted({r["copy"] for r in rows}) == list(range(100))
    summary = {d["name"]: d for d in read_json(run_dir / "stages/retrieve/search/summary.json")["datasets"]}
    assert summary["nothing"]["qualifying_clusters"] == 1 and summary["nothing"]["hits"] == 0
    assert summary["everything"]["hits"] == 100 * len(keys)


def test_missing_as_is_path_is_a_config_error_before_any_work(tmp_path):
    run_dir, curated = _setup(tmp_path, {"one": up.alive_vectors()[1][:1]})
    retrieve = {
        "datasets": [{"name": "raw", "mode": "as_is", "source": {"name": "raw", "path": str(tmp_path / "nowhere")}}]
    }
    with pytest.raises(ConfigError, match=r"retrieve\.datasets\.0\.source\.path"):
        run_stages(run_dir, up.pipeline(run_dir, curated, retrieve), ["retrieve"])
    assert not (run_dir / "stages" / "retrieve").exists()
    retrieve["datasets"][0]["source"]["path"] = "<RAW_IMAGES>"
    with pytest.raises(ConfigError, match=r"retrieve\.datasets\.0\.source\.path: '<RAW_IMAGES>' is a placeholder"):
        run_stages(run_dir, up.pipeline(run_dir, curated, retrieve), ["retrieve"])
    curated[0]["path"] = "<ONE>"
    retrieve = {"datasets": [{"name": "x", "mode": "sample", "source": "one"}]}
    with pytest.raises(ConfigError, match=r"embed\.curated\.0\.path: '<ONE>' is a placeholder"):
        run_stages(run_dir, up.pipeline(run_dir, curated, retrieve), ["retrieve"])


@pytest.mark.parametrize(
    ("entry", "match"),
    [
        ({"name": "x", "source": "unknown", "mode": "sample"}, "not an embed.curated image set"),
        ({"name": "x", "source": {"name": "x", "path": "."}, "mode": "sample"}, "needs query embeddings"),
    ],
)
def test_source_errors(tmp_path, entry, match):
    run_dir, curated = _setup(tmp_path, {"one": up.alive_vectors()[1][:1]})
    with pytest.raises(ConfigError, match=match):
        run_stages(run_dir, up.pipeline(run_dir, curated, {"datasets": [entry]}), ["retrieve"])


def test_config_rejects_repeated_names_and_unknown_keys(tmp_path):
    run_dir, curated = _setup(tmp_path, {"one": up.alive_vectors()[1][:1]})
    entry = {"name": "x", "source": "one", "mode": "sample"}
    with pytest.raises(ConfigError, match="unique"):
        cfg.validate(up.pipeline(run_dir, curated, {"datasets": [entry, entry]}))
    with pytest.raises(ConfigError, match="per_cluster"):
        cfg.validate(up.pipeline(run_dir, curated, {"datasets": [{**entry, "per_clusters": 3}]}))
