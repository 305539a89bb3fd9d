"""Export of a manifest's shards to img2dataset's output layout.

img2dataset writes, per shard ``NNNNN``: ``NNNNN.tar`` (``{key}.jpg`` +
``{key}.json``), ``NNNNN.parquet`` (one row per sample: ``key``, ``status``,
``error_message``, ``url``, ``width``, ``height``, ...) and
``NNNNN_stats.json``. Tools written for img2dataset outputs read such a
folder as is. The tars are the pipeline's shards unchanged (hard-linked when
the file system allows, else copied), so their sha256 stays the manifest's;
the Parquet holds every field of each sample's JSON plus the image size.

Memory: one shard's sample JSONs at a time (10,000 rows by default).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import time
from pathlib import Path
from typing import Any

import pyarrow as pa

from curation import tables
from curation.atomic import atomic_path, write_json
from curation.errors import ManifestError


def export_img2dataset(manifest_path: str | Path, out_dir: Path, copy: bool = False) -> dict[str, int]:
    """Write ``out_dir/NNNNN.{tar,parquet}`` and ``NNNNN_stats.json`` per shard; return totals."""
    from curation.manifest import read_manifest, verify

    manifest = read_manifest(manifest_path)
    problems = verify(manifest)
    if problems:
        raise ManifestError(f"{manifest_path}: cannot export: " + "; ".join(problems[:5]))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    samples = 0
    for i, source in enumerate(manifest.shard_urls()):
        name = f"{i:05d}"
        started = time.time()
        _place(Path(source), out_dir / f"{name}.tar", copy)
        table = shard_table(out_dir / f"{name}.tar")
        tables.write_parquet(table, out_dir / f"{name}.parquet")
        write_json(out_dir / f"{name}_stats.json", _stats(table.num_rows, started, Path(source).name))
        samples += table.num_rows
    return {"shards": len(manifest.shards), "samples": samples}


def _place(source: Path, target: Path, copy: bool) -> None:
    """Hard link (no bytes copied) unless asked to copy or across file systems."""
    with atomic_path(target) as tmp:
        if not copy:
            try:
                os.link(source, tmp)
                return
            except OSError:  # another file system, or links not supported: copy instead
                pass
        shutil.copyfile(source, tmp)


def shard_table(tar_path: Path) -> pa.Table:
    """One row per sample of a shard, in tar order: img2dataset's columns, then the sample JSON's."""
    from PIL import Image

    rows: dict[str, dict[str, Any]] = {}
    with tarfile.open(tar_path, "r:") as tar:
        for member in tar:
            key, _, ext = member.name.rpartition(".")
            row = rows.setdefault(key, {"key": key, "status": "success", "error_message": None})
            file = tar.extractfile(member)
            assert file is not None  # the stage's shards hold regular files only
            data = file.read()
            if ext == "json":
                meta = json.loads(data)
                row.update({k: v for k, v in meta.items() if k not in ("key", "status", "error_message")})
            elif ext in ("jpg", "jpeg", "png", "webp"):
                with Image.open(io.BytesIO(data)) as image:  # reads the header only
                    row["width"], row["height"] = image.size
    names = list(dict.fromkeys(name for row in rows.values() for name in row))  # union, first-seen order
    columns = {name: pa.array([row.get(name) for row in rows.values()], _type(name)) for name in names}
    # An input column that is null throughout one shard would otherwise be typed null there.
    return pa.table({name: c.cast(pa.string()) if pa.types.is_null(c.type) else c for name, c in columns.items()})


def _type(name: str) -> pa.DataType | None:
    """Fixed types for the known fields, so that every shard's Parquet has the same schema."""
    from curation.stages.shard.io import SAMPLE_FIELDS

    known = {f.name: f.type for f in SAMPLE_FIELDS} | {
        "status": pa.string(),
        "error_message": pa.string(),
        "url": pa.string(),
        "width": pa.int32(),
        "height": pa.int32(),
        "similarity": pa.float64(),
    }
    return known.get(name)


def _stats(count: int, started: float, source: str) -> dict[str, Any]:
    return {
        "count": count,
        "successes": count,
        "failed_to_download": 0,
        "failed_to_resize": 0,
        "duration": round(time.time() - started, 3),
        "start_time": started,
        "end_time": time.time(),
        "status_dict": {"success": count},
        "source_shard": source,
    }
