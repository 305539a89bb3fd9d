"""A run directory as the retrieve stage leaves it, built directly, for the shard stage alone.

``partitions`` x ``rows`` pool images of random sizes (JPEG magic, random
payload: passed through unchanged), each with its download JSON (URL and a
caption column). About half of the images are selected, some with several
copies (``keep_duplicates``), spread over a ``sample`` and a ``cluster``
entry; an ``as_is`` folder of PNGs is re-encoded. Images listed in
``missing`` are selected but absent from their tar.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from curation import tables
from curation.atomic import write_json
from curation.download.shardwriter import ShardWriter
from curation.imagestore import pool_tar
from curation.stages.retrieve import io as retrieve_io
from tests.stages.retrieve import retrieval_upstream as up

JPEG_MAGIC = b"\xff\xd8\xff"


def _marker(step_dir: Path, partition: int, rows: int) -> None:
    from curation.markers import marker_path

    path = marker_path(step_dir, partition)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, {"rows": rows, "counts": {}, "files": {}})


def _selection(rng: np.random.Generator, partition: int, rows: int) -> pa.Table:
    picked = np.flatnonzero(rng.random(rows) < 0.5)
    copies = np.where(rng.random(len(picked)) < 0.2, rng.integers(2, 4, len(picked)), 1)
    row = np.repeat(picked, copies)
    copy = np.concatenate([np.arange(c) for c in copies]) if len(copies) else np.zeros(0, np.int64)
    n = len(row)
    cluster_mode = rng.random(n) < 0.4
    return pa.table(
        {
            "key": [tables.sample_key(partition, int(r)) for r in row],
            "partition": pa.array(np.full(n, partition), pa.int64()),
            "row": pa.array(row, pa.int64()),
            "copy": pa.array(copy, pa.int32()),
            "copies": pa.array(np.repeat(copies, copies), pa.int32()),
            "dataset": np.where(cluster_mode, "random", "knn").tolist(),
            "mode": np.where(cluster_mode, "cluster", "sample").tolist(),
            "query_dataset": ["queries"] * n,
            "query_key": [f"queries-{int(q):08d}" for q in rng.integers(0, 60, n)],
            "similarity": pa.array(rng.random(n), pa.float32()),
            "rank": pa.array(rng.integers(0, 5, n), pa.int32()),
            "cluster": pa.array(rng.integers(0, 8, n), pa.int64()),
        },
        schema=retrieve_io.SELECTION_SCHEMA,
    )


def build(
    run_dir: Path, partitions: int, rows: int, mean_bytes: int = 4000, seed: int = 0, missing: tuple[str, ...] = ()
) -> None:
    rng = np.random.default_rng(seed)
    stages = Path(run_dir) / "stages"
    search, mark = stages / "retrieve/search", stages / "retrieve/mark"
    mark.mkdir(parents=True, exist_ok=True)
    for p in range(partitions):
        name = tables.partition_name(p)
        keys = [tables.sample_key(p, r) for r in range(rows)]
        sizes = rng.integers(mean_bytes // 4, 2 * mean_bytes - mean_bytes // 4, rows)
        tar = pool_tar(run_dir, p)
        tar.parent.mkdir(parents=True, exist_ok=True)
        with ShardWriter(tar) as writer:
            for key, size in zip(keys, sizes, strict=True):
                if key not in missing:
                    writer.write_sample(
                        key,
                        JPEG_MAGIC + rng.bytes(int(size) - 3),
                        {"url": f"http://pool.test/{key}.jpg", "caption": f"caption of {key}"},
                    )
        path = retrieve_io.selection_path(search, p)
        path.parent.mkdir(parents=True, exist_ok=True)
        tables.write_parquet(_selection(rng, p, rows), path)
        tables.write_parquet(tables.status_table(keys, ["success"] * rows), mark / f"{name}.parquet")
        _marker(mark, p, rows)
    write_json(search / "summary.json", {"datasets": {}})
    up.mark_done(run_dir, ("download", "embed", "cluster", "retrieve"))


def pipeline(run_dir: Path, sets: Path, shard: dict) -> dict:
    """The pipeline of :func:`build`'s run: two pool entries and one ``as_is`` folder of PNGs."""
    photos = up.image_folder(Path(sets) / "photos", 3, "PNG")
    (Path(sets) / "queries").mkdir(parents=True, exist_ok=True)
    up.write_curated(run_dir, "queries", up.unit(np.random.default_rng(1).standard_normal((60, up.DIM))))
    retrieve = {
        "datasets": [
            {"name": "knn", "source": "queries", "mode": "sample", "k": 5},
            {"name": "photos", "mode": "as_is", "source": {"name": "photos", "path": str(photos)}},
            {"name": "random", "source": "queries", "mode": "cluster", "per_cluster": 7},
        ],
        "collisions": "keep_duplicates",
    }
    return up.pipeline(run_dir, [{"name": "queries", "path": str(Path(sets) / "queries")}], retrieve, shard)
