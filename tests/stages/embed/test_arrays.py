"""Embedding files: round trips of the layout that embed writes and cluster/retrieve read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from curation import tables
from curation.algorithms.knn import unit_rows as unit
from curation.atomic import write_json
from curation.layout import files_dir, partition_path
from curation.stages.base import StageContext
from curation.stages.embed import arrays as embeddings


def write_pool(run_dir: Path, parts: dict[int, tuple[list[str], np.ndarray, np.ndarray]], dtype="float32") -> None:
    """Lay out committed embed partitions: ``{partition: (keys, embedding_row, X)}``.

    Rows with ``embedding_row == -1`` are written as dropped by dedup.
    """
    root = embeddings.pool_dir(run_dir)
    files_dir(root).mkdir(parents=True, exist_ok=True)
    for p, (keys, emb_row, x) in parts.items():
        emb_row = np.asarray(emb_row, dtype=np.int64)
        status = [tables.SUCCESS if r >= 0 else "duplicate_copy" for r in emb_row]
        dropped = [None if r >= 0 else "dedup" for r in emb_row]
        table = tables.status_table(keys, status, dropped).append_column(embeddings.ROW_COLUMN, pa.array(emb_row))
        name = tables.partition_name(p)
        tables.write_parquet(table, root / f"{name}.parquet")
        embeddings.save_array(partition_path(root, p, "npy"), x, dtype)
        write_json(partition_path(root, p, "stats.json"), {"rows": len(keys), "counts": {}})
    write_json(root.parent / "_SUCCESS.json", {"stage": "embed"})


@pytest.fixture
def pool(tmp_path):
    rng = np.random.default_rng(0)
    x0, x2 = unit(rng.normal(size=(3, 8))), unit(rng.normal(size=(2, 8)))
    # Partition 0: rows 1 and 3 not embedded; partition 2: both embedded (partition 1 absent).
    parts = {
        0: (["a0", "a1", "a2", "a3", "a4"], [0, -1, 1, -1, 2], x0),
        2: (["c0", "c1"], [0, 1], x2),
    }
    write_pool(tmp_path, parts)
    return tmp_path, np.vstack([x0, x2])


def test_load_pool_embeddings_round_trip(pool):
    run_dir, x = pool
    keys, got, partitions, rows = embeddings.load_pool_embeddings(run_dir)
    assert keys.tolist() == ["a0", "a2", "a4", "c0", "c1"]
    assert partitions.tolist() == [0, 0, 0, 2, 2] and rows.tolist() == [0, 2, 4, 0, 1]
    assert got.dtype == np.float32 and got.shape == (5, 8)
    np.testing.assert_array_equal(got, x)
    # A StageContext works as well as a run dir; one partition comes back memory-mapped.
    ctx = StageContext(run_dir, None, "cluster")
    keys2, one, _, _ = embeddings.load_pool_embeddings(ctx, partitions=[2])
    assert keys2.tolist() == ["c0", "c1"] and isinstance(one, np.memmap)
    assert embeddings.pool_counts(run_dir) == {0: 3, 2: 2}
    assert embeddings.pool_dim(run_dir) == 8


def test_take_pool_rows_gathers_global_indices(pool):
    run_dir, x = pool
    idx = np.array([0, 2, 3, 4])
    np.testing.assert_array_equal(embeddings.take_pool_rows(run_dir, idx), x[idx])
    assert embeddings.take_pool_rows(run_dir, np.array([], np.int64)).shape == (0, 8)


def test_float16_storage_is_returned_as_float32(tmp_path):
    x = unit(np.random.default_rng(1).normal(size=(4, 16)))
    write_pool(tmp_path, {0: (["k0", "k1", "k2", "k3"], [0, 1, 2, 3], x)}, dtype="float16")
    assert np.load(partition_path(embeddings.pool_dir(tmp_path), 0, "npy")).dtype == np.float16
    _, got, _, _ = embeddings.load_pool_embeddings(tmp_path)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, x, atol=1e-3)


def test_partition_embeddings_follow_embedding_row_order(tmp_path):
    x = np.arange(6, dtype=np.float32).reshape(3, 2)
    # The npy order is given by embedding_row, whatever the table order.
    write_pool(tmp_path, {4: (["r0", "r1", "r2"], [2, 0, 1], x)})
    keys, got, rows = embeddings.partition_embeddings(tmp_path, 4)
    assert keys.tolist() == ["r1", "r2", "r0"] and rows.tolist() == [1, 2, 0]
    np.testing.assert_array_equal(got, x)


def test_empty_pool(tmp_path):
    keys, x, partitions, rows = embeddings.load_pool_embeddings(tmp_path)
    assert len(keys) == len(partitions) == len(rows) == 0 and x.shape[0] == 0
    assert embeddings.pool_counts(tmp_path) == {}


def test_curated_round_trip(tmp_path):
    root = embeddings.curated_dir(tmp_path)
    root.mkdir(parents=True)
    x = unit(np.random.default_rng(2).normal(size=(2, 4)))
    base = tables.status_table(
        ["s-0", "s-1", "s-2"], ["success", "failed_decode:broken_image", "success"], [None, "embed", None]
    )
    table = (
        base.append_column(embeddings.ROW_COLUMN, pa.array([0, -1, 1], pa.int64()))
        .append_column("path", pa.array(["a/1.jpg", "a/2.jpg", "b/3.jpg"]))
        .append_column("label", pa.array(["a", "a", "b"]))
        .append_column("meta", pa.array(["{}", "{}", "{}"]))
    )
    tables.write_parquet(table, root / "set.parquet")
    embeddings.save_array(root / "set.npy", x)
    assert embeddings.curated_datasets(tmp_path) == ["set"]
    keys, got, meta = embeddings.load_curated_embeddings(tmp_path, "set")
    assert keys.tolist() == ["s-0", "s-2"]
    np.testing.assert_array_equal(got, x)
    assert meta.column_names == ["key", "path", "label", "meta"]
    assert meta.column("label").to_pylist() == ["a", "b"]
    assert embeddings.curated_counts(root / "set.parquet") == {"images": 3, "embedded": 2, "failed_decode": 1}
    with pytest.raises(FileNotFoundError, match="embedded: \\['set'\\]"):
        embeddings.load_curated_embeddings(tmp_path, "other")


def test_npy_appender_writes_plain_npy(tmp_path):
    x = np.random.default_rng(3).normal(size=(1000, 12))
    writer = embeddings.NpyAppender(tmp_path / "a.npy", 12, "float16")
    for start in range(0, 1000, 300):
        writer.append(x[start : start + 300])
    assert writer.close() == 1000
    back = np.load(tmp_path / "a.npy", allow_pickle=False)
    assert back.dtype == np.float16 and back.shape == (1000, 12)
    np.testing.assert_array_equal(back, x.astype(np.float16))
    empty = embeddings.NpyAppender(tmp_path / "b.npy", 7)
    empty.close()
    assert np.load(tmp_path / "b.npy").shape == (0, 7)
