"""A synthetic dedup pool: the features step's output written directly, with planted duplicate groups.

Random 32 x 32 thumbnails and ``DIMS``-d descriptors; planted hash groups (byte copies and a few flipped
pixels of one thumbnail, spread over partitions) and copy groups (descriptors at cosine ~0.99, other
thumbnails); image sizes from a small set, so that the keep policy meets ties. One row per partition failed
to decode (no side-file row). Only the graph and table steps of the dedup stage then run.
"""

from __future__ import annotations

import shutil
import tracemalloc
from pathlib import Path

import numpy as np
import pyarrow as pa

from curation import tables
from curation.atomic import write_json
from curation.stages.base import files_dir, partition_path

DIMS = 16


def write_features(run_dir: Path, partitions: int, per_partition: int, groups: int, seed: int = 0) -> None:
    """Download and features outputs of ``partitions`` x ``per_partition`` rows with ``groups`` planted
    hash groups and as many copy groups (2 to 4 images each, in any partitions)."""
    rng = np.random.default_rng(seed)
    n = partitions * per_partition
    thumbs = rng.integers(0, 256, (n, 32, 32), dtype=np.uint8)
    desc = rng.standard_normal((n, DIMS)).astype(np.float32)
    planted = rng.permutation(n)[: 2 * groups * 4].reshape(2 * groups, 4)
    sizes = rng.integers(2, 5, 2 * groups)
    for g, (members, size) in enumerate(zip(planted, sizes, strict=True)):
        first, rest = members[0], members[1:size]
        if g < groups:  # a hash group: copies of one thumbnail, some with a few pixels changed
            thumbs[rest] = thumbs[first]
            thumbs[rest[::2], 0, :2] ^= 1
        else:  # a copy group: near descriptors
            desc[rest] = desc[first] + 0.05 * rng.standard_normal((len(rest), DIMS)).astype(np.float32)
    side = rng.choice([32, 48, 64], size=(2, n))
    fetch, step = run_dir / "stages/download/fetch", run_dir / "stages/dedup/features"
    for d in (fetch, step):
        files_dir(d).mkdir(parents=True)
    for p in range(partitions):
        rows = slice(p * per_partition, (p + 1) * per_partition)
        keys = [tables.sample_key(p, i) for i in range(per_partition + 1)]
        alive = tables.status_table(keys, ["success"] * len(keys))
        tables.write_parquet(alive, partition_path(fetch, p, "parquet"))
        write_json(partition_path(fetch, p, "stats.json"), {"rows": len(keys), "files": {}})
        failed = len(keys) // 2  # one row that did not decode, in the middle of the partition
        status = ["success"] * len(keys)
        status[failed] = "failed_decode:broken_image"
        dropped = [None] * len(keys)
        dropped[failed] = "dedup"
        mask = np.arange(len(keys)) == failed
        at = np.cumsum(~mask) - 1
        wide = np.where(mask, 0, side[:, rows][:, at])
        table = (
            tables.status_table(keys, status, dropped)
            .append_column("width", pa.array(wide[0], mask=mask))
            .append_column("height", pa.array(wide[1], mask=mask))
            .append_column("feature_row", pa.array(at, mask=mask))
        )
        tables.write_parquet(table, partition_path(step, p, "parquet"))
        np.save(partition_path(step, p, "thumbs.npy"), thumbs[rows])
        np.save(partition_path(step, p, "sources.npy"), np.zeros((per_partition, 0, 0), np.uint8))
        np.save(partition_path(step, p, "desc.npy"), desc[rows].astype(np.float16))
        write_json(partition_path(step, p, "stats.json"), {"rows": len(keys), "files": {}})
    write_json(run_dir / "stages/download/_SUCCESS.json", {"stage": "download"})


def config(run_dir: Path, helpers: int, bench: Path | None = None, **dedup) -> dict:
    section = {
        "hashing": {"method": "phash", "max_distance": 4, "min_correlation": None, "variants": {"enabled": False}},
        "descriptor": {"backbone": "resnet18", "dims": DIMS, "image_size": 64, "device": "cpu"},
        "copy_dedup": {"enabled": True, "threshold": 0.9, "k": 8},
        "graph": {"workers": {"count": helpers}},
    }
    section["descriptor"]["allow_random_weights"] = True  # descriptors are given: the model only describes benchmarks
    if bench is not None:
        section["relative"] = {
            "threshold": 0.5,
            "k": 8,
            "benchmarks": [{"name": "b", "kind": "folder", "path": str(bench)}],
        }
    section.update(dedup)
    return {
        "name": "t",
        "run_dir": str(run_dir),
        "stages": ["dedup"],
        "dedup": section,
        "runner": {"max_partition_retries": 0},
    }


def rerun_graph(src: Path, dst: Path, cfg: dict) -> Path:
    """A copy of ``src`` (features done) with the graph and table steps run under ``cfg``."""
    from curation.runner.local import run_stages

    shutil.copytree(src, dst)
    for step in ("graph", "table", "table.files"):
        shutil.rmtree(dst / "stages/dedup" / step, ignore_errors=True)
    (dst / "stages/dedup/_SUCCESS.json").unlink(missing_ok=True)
    run_stages(dst, {**cfg, "run_dir": str(dst)}, ["dedup"])
    return dst


def decisions(run_dir: Path) -> pa.Table:
    """Every partition's decisions file, concatenated in partition order."""
    paths = sorted((run_dir / "stages/dedup/graph").glob("decisions-part-*.parquet"))
    return pa.concat_tables([tables.read_parquet(p) for p in paths])


class _Meter:
    """Peak traced bytes outside helper calls, less what the helpers kept (their pools, the blocks they read,
    and the results they return)."""

    def __init__(self):
        self.peak, self.helpers = 0, 0

    def segment(self) -> None:
        self.peak = max(self.peak, tracemalloc.get_traced_memory()[1] - self.helpers)

    def around(self, fn):
        def wrapped(*args, **kwargs):
            self.segment()
            before = tracemalloc.get_traced_memory()[0]
            try:
                return fn(*args, **kwargs)
            finally:
                self.helpers += tracemalloc.get_traced_memory()[0] - before
                tracemalloc.reset_peak()

        return wrapped


def traced_graph(src: Path, dst: Path, cfg: dict) -> tuple[Path, int]:
    """:func:`rerun_graph` in-process, and the graph process's own peak traced memory (``tracemalloc``, numpy
    buffers included; in-process helpers' allocations subtracted)."""
    from curation.runner import workers
    from curation.stages.dedup import shards
    from curation.stages.dedup.stage import Graph

    meter, run = _Meter(), Graph.run
    call, init = workers.LocalGroup.call, shards.DedupShard.__init__

    def traced_run(self, out_dir):
        tracemalloc.start()
        try:
            return run(self, out_dir)
        finally:
            meter.segment()
            tracemalloc.stop()

    Graph.run, workers.LocalGroup.call = traced_run, meter.around(call)
    shards.DedupShard.__init__ = meter.around(init)
    try:
        return rerun_graph(src, dst, cfg), meter.peak
    finally:
        Graph.run, workers.LocalGroup.call, shards.DedupShard.__init__ = run, call, init
