"""A run directory as download, embed and cluster leave it, built directly.

The pool: ``PARTITIONS`` x ``ROWS`` samples; sample ``i`` (global index)
lies near direction ``i % CLUSTERS`` and belongs to that cluster. Rows with
``row % 7 == 3`` were dropped by dedup (no embedding, no cluster). Every
alive sample has a small JPEG in the download tar. Cluster ``CLUSTERS`` has
a centroid but no sample (an empty cluster). Curated query sets are
written as the embed stage writes them.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image

from curation import tables
from curation.algorithms.knn import unit_rows as unit
from curation.atomic import write_json
from curation.download.shardwriter import ShardWriter
from curation.stages.base import STEP_DONE, GlobalStep, files_dir, partition_path
from curation.stages.embed import arrays as embeddings
from curation.stages.registry import get_stage

PARTITIONS, ROWS, DIM, CLUSTERS = 3, 20, 16, 4


def centroids() -> np.ndarray:
    """One direction per cluster, plus cluster ``CLUSTERS`` that no sample is in."""
    return np.eye(CLUSTERS + 1, DIM, dtype=np.float32)


def pool_vectors() -> np.ndarray:
    """(PARTITIONS * ROWS, DIM): every sample's embedding, dropped ones included."""
    rng = np.random.default_rng(0)
    n = PARTITIONS * ROWS
    return unit(centroids()[np.arange(n) % CLUSTERS] + 0.3 * rng.standard_normal((n, DIM)))


def dropped(row: int) -> bool:
    return row % 7 == 3


def jpeg(seed: int, fmt: str = "JPEG") -> bytes:
    color = tuple(int(c) for c in np.random.default_rng(seed).integers(0, 255, 3))
    out = io.BytesIO()
    Image.new("RGB", (8, 6), color).save(out, format=fmt)
    return out.getvalue()


def _marker(step_dir: Path, partition: int, table: pa.Table) -> None:
    write_json(partition_path(step_dir, partition, "stats.json"), {"rows": table.num_rows, "counts": {}, "files": {}})


def download_meta(key: str) -> dict:
    """A download-stage JSON: its own columns, and the URL list's (caption, license, a clashing 'dataset')."""
    return {
        "url": f"http://pool.test/{key}.jpg",
        "status": "success",
        "width": 8,
        "height": 6,
        "sha256": "0" * 64,
        "caption": f"caption of {key}",
        "license": "cc-by",
        "dataset": "web",
    }


def build(run_dir: Path, missing_images: tuple[str, ...] = ()) -> None:
    """Write the download, embed and cluster outputs of the synthetic pool."""
    x = pool_vectors()
    c = centroids()
    stage = Path(run_dir) / "stages"
    for p in range(PARTITIONS):
        keys = [tables.sample_key(p, r) for r in range(ROWS)]
        gone = np.array([dropped(r) for r in range(ROWS)])
        status = tables.status_table(
            keys, np.where(gone, "duplicate_copy", "success").tolist(), np.where(gone, "dedup", None).tolist()
        )
        fetch = stage / "download" / "fetch"
        files_dir(fetch).mkdir(parents=True, exist_ok=True)
        with ShardWriter(partition_path(fetch, p, "tar")) as writer:
            for r, key in enumerate(keys):
                if key not in missing_images:
                    writer.write_sample(key, jpeg(p * ROWS + r), download_meta(key))
        emb_row = np.where(gone, -1, np.cumsum(~gone) - 1)
        xs = x[p * ROWS : (p + 1) * ROWS][~gone]
        embed_dir = stage / "embed" / "pool"
        files_dir(embed_dir).mkdir(parents=True, exist_ok=True)
        embed_dir.mkdir(exist_ok=True)
        table = status.append_column(embeddings.ROW_COLUMN, pa.array(emb_row, pa.int64()))
        tables.write_parquet(table, embed_dir / f"{tables.partition_name(p)}.parquet")
        embeddings.save_array(partition_path(embed_dir, p, "npy"), xs, "float16")
        _marker(embed_dir, p, table)
        half = x[p * ROWS : (p + 1) * ROWS].astype(np.float16).astype(np.float32)
        cluster = np.where(gone, -1, (p * ROWS + np.arange(ROWS)) % CLUSTERS)
        sims = np.einsum("ij,ij->i", half, c[np.maximum(cluster, 0)])
        assign_dir = stage / "cluster" / "assign"
        assign_dir.mkdir(parents=True, exist_ok=True)
        table = status.append_column("cluster", pa.array(cluster, pa.int64())).append_column(
            "similarity", pa.array(sims, pa.float32(), mask=gone)
        )
        tables.write_parquet(table, assign_dir / f"{tables.partition_name(p)}.parquet")
        _marker(assign_dir, p, table)
    (stage / "cluster" / "train").mkdir(parents=True, exist_ok=True)
    np.save(stage / "cluster" / "train" / "centroids.npy", c)
    mark_done(run_dir, ("download", "embed", "cluster"))


def mark_done(run_dir: Path, names) -> None:
    """Commit stages as a run commits them: global steps, and map steps with nothing to do, too."""
    stage = Path(run_dir) / "stages"
    for name in names:
        for step in get_stage(name).steps:
            if issubclass(step, GlobalStep) or not (stage / name / step.name).exists():
                write_json(stage / name / step.name / STEP_DONE, {"stage": name, "step": step.name})
        write_json(stage / name / STEP_DONE, {"stage": name})


def alive_vectors() -> tuple[list[str], np.ndarray, np.ndarray]:
    """Keys, float16-rounded embeddings and clusters of the alive pool samples."""
    x = pool_vectors().astype(np.float16).astype(np.float32)
    keys, rows, clusters = [], [], []
    for p in range(PARTITIONS):
        for r in range(ROWS):
            if not dropped(r):
                keys.append(tables.sample_key(p, r))
                rows.append(p * ROWS + r)
                clusters.append((p * ROWS + r) % CLUSTERS)
    return keys, x[rows], np.array(clusters)


def write_curated(run_dir: Path, name: str, x: np.ndarray) -> list[str]:
    """A curated set as the embed stage writes it; returns its keys."""
    root = embeddings.curated_dir(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    keys = [f"{name}-{i:08d}" for i in range(len(x))]
    table = tables.status_table(keys, ["success"] * len(keys)).append_column(
        embeddings.ROW_COLUMN, pa.array(np.arange(len(x)), pa.int64())
    )
    for column in ("path", "label"):
        table = table.append_column(
            column, pa.array([f"{k}.jpg" for k in keys] if column == "path" else [None] * len(keys), pa.string())
        )
    table = table.append_column("meta", pa.array(["{}"] * len(keys), pa.string()))
    tables.write_parquet(table, root / f"{name}.parquet")
    embeddings.save_array(root / f"{name}.npy", x, "float32")
    return keys


def image_folder(root: Path, count: int, fmt: str = "PNG") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (root / f"img{i}.{fmt.lower()}").write_bytes(jpeg(1000 + i, fmt))
    return root


def pipeline(run_dir: Path, curated: list[dict], retrieve: dict, shard: dict | None = None) -> dict:
    """A pipeline dict whose retrieve (and shard) stages run on the built run dir."""
    return {
        "name": "retrieval-test",
        "run_dir": str(run_dir),
        "seed": 7,
        "stages": ["embed", "cluster", "retrieve"] + (["shard"] if shard is not None else []),
        "embed": {"model": {"kind": "random", "arch": "vit_tiny16"}, "curated": curated},
        "cluster": {"k": CLUSTERS},
        "retrieve": retrieve,
        **({"shard": shard} if shard is not None else {}),
    }
