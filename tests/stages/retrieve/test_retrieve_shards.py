"""Retrieval over a sharded pool: same selection for any shard count; memory bounded by the shard."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation import config as cfg
from curation import tables
from curation.algorithms.knn import unit_rows
from curation.atomic import read_json, write_json
from curation.runner.local import run_stages
from curation.stages.base import files_dir, partition_path
from curation.stages.embed import arrays as embeddings
from tests.stages.retrieve import retrieval_upstream as up


def synthetic_pool(run_dir: Path, partitions: int, rows: int, dim: int, clusters: int = 8) -> None:
    """Embed and cluster outputs of a random pool; every 5th row dropped upstream."""
    rng = np.random.default_rng(partitions)
    centroids = unit_rows(rng.standard_normal((clusters, dim)).astype(np.float32))
    stages = run_dir / "stages"
    for p in range(partitions):
        name = tables.partition_name(p)
        keys = [tables.sample_key(p, r) for r in range(rows)]
        gone = np.arange(rows) % 5 == 2
        status = tables.status_table(
            keys, np.where(gone, "duplicate_copy", "success").tolist(), np.where(gone, "dedup", None).tolist()
        )
        label = rng.integers(0, clusters, rows)
        x = unit_rows(centroids[label] + 0.5 * rng.standard_normal((rows, dim)).astype(np.float32))
        for step, table in (
            (
                "embed/pool",
                status.append_column(embeddings.ROW_COLUMN, pa.array(np.where(gone, -1, np.cumsum(~gone) - 1))),
            ),
            (
                "cluster/assign",
                status.append_column("cluster", pa.array(np.where(gone, -1, label))).append_column(
                    "similarity", pa.array(np.einsum("ij,ij->i", x, centroids[label]), pa.float32(), mask=gone)
                ),
            ),
        ):
            files_dir(stages / step).mkdir(parents=True, exist_ok=True)
            tables.write_parquet(table, stages / step / f"{name}.parquet")
            write_json(partition_path(stages / step, p, "stats.json"), {"rows": rows, "counts": {}, "files": {}})
        embeddings.save_array(partition_path(stages / "embed/pool", p, "npy"), x[~gone], "float16")
    (stages / "cluster/train").mkdir(parents=True)
    np.save(stages / "cluster/train/centroids.npy", centroids)
    up.mark_done(run_dir, ("embed", "cluster"))
    up.write_curated(run_dir, "queries", unit_rows(rng.standard_normal((60, dim)).astype(np.float32)))


def _data(run_dir: Path, tmp_path: Path, shards: dict) -> dict:
    (tmp_path / "queries").mkdir(exist_ok=True)
    retrieve = {
        "datasets": [
            {"name": "knn", "source": "queries", "mode": "sample", "k": 5},
            {"name": "random", "source": "queries", "mode": "cluster", "per_cluster": 7, "min_queries": 2},
            {
                "name": "closest",
                "source": "queries",
                "mode": "cluster",
                "per_cluster": 4,
                "min_queries": 1,
                "selection": "closest",
                "cap": 20,
            },
        ],
        "collisions": "keep_duplicates",
        "index": {"kind": "flat"},
        "shards": shards,
    }
    return up.pipeline(run_dir, [{"name": "queries", "path": str(tmp_path / "queries")}], retrieve)


def _selection(run_dir: Path) -> list[dict]:
    return pq.read_table(sorted((run_dir / "stages/retrieve/search/selected").glob("*.parquet"))).to_pylist()


def test_selection_is_the_same_for_any_shard_count(tmp_path):
    got = {}
    for count in (1, 3, 5):
        run_dir = tmp_path / f"shards{count}"
        synthetic_pool(run_dir, partitions=5, rows=40, dim=16)
        run_stages(run_dir, _data(run_dir, tmp_path, {"count": count}), ["retrieve"])
        got[count] = _selection(run_dir)
        assert len(read_json(run_dir / "stages/retrieve/search/_SUCCESS.json")["shards"]) == count
    assert got[1] and {r["dataset"] for r in got[1]} == {"knn", "random", "closest"}
    assert got[3] == got[1] and got[5] == got[1]


@pytest.mark.slow
def test_search_and_shard_memory_stay_flat_when_pool_and_shards_grow_alike(ray_session, tmp_path):
    from curation.runner import run_pipeline

    rows, dim = 10_000, 256  # 10 MB of float32 vectors per partition
    peaks = {}
    for partitions in (2, 8):
        run_dir = tmp_path / f"pool{partitions}"
        synthetic_pool(run_dir, partitions, rows, dim)
        data = _data(run_dir, tmp_path, {"count": partitions // 2, "num_cpus": 0.25})
        data["runner"] = {"progress": False}
        run_pipeline(cfg.validate(data), ["retrieve"])
        search = read_json(run_dir / "stages/retrieve/search/_SUCCESS.json")
        peaks[partitions] = (search["peak_rss_bytes"], max(s["peak_rss_bytes"] for s in search["shards"]))
    pool_growth = 6 * rows * 0.8 * dim * 4  # the 4x pool holds ~154 MB more float32 vectors
    for i, what in enumerate(("search", "largest shard")):
        growth = peaks[8][i] - peaks[2][i]
        assert growth < pool_growth / 4, (what, peaks)
