"""Memory of the dedup graph process (not its helpers) at N and 4N images, same planted duplicates.

A synthetic pool (``tests/stages/dedup/synthetic.py``: random thumbnails and 16-d descriptors, ``--groups``
planted hash groups and as many copy groups) is written for ``--partitions`` and 4x as many partitions of
``--per-partition`` images; the dedup graph and table steps then run in-process with 1 and 4 helpers.
Python's ``tracemalloc`` (numpy's buffers included) measures the graph step; what the helpers allocate
and keep during their calls (their pools, the blocks they read) is subtracted: the peak printed is that of
the graph process's own code between helper calls (results returned by a call are counted as the helpers').
Also printed: the step's own accounting (``held`` in ``graph/_SUCCESS.json``: touched images and the bytes
of the arrays the graph process keeps), when the step records it.

    python bench/bench_dedup_memory.py --partitions 4 --per-partition 5000
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path


def measure(root: Path, partitions: int, per_partition: int, groups: int, helpers: int) -> dict:
    from tests.stages.dedup import synthetic as ds

    src = root / f"src-{partitions}-{per_partition}"
    ds.write_features(src, partitions, per_partition, groups, seed=1)
    cfg = ds.config(src, helpers, copy_dedup={"enabled": True, "threshold": 0.95, "k": 8})
    out, peak = ds.traced_graph(src, root / f"run-{partitions}-{per_partition}", cfg)
    stats = json.loads((out / "stages/dedup/graph/_SUCCESS.json").read_text())
    n = stats["funnel"]["described"]
    return {
        "images": n,
        "graph_peak_bytes": peak,
        "per_image": round(peak / n, 1),
        "held": stats.get("held"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--per-partition", type=int, default=5000)
    parser.add_argument("--groups", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        measure(Path(tmp), 2, 200, 2, 2)  # warm-up: the modules the step imports are not the pool's memory
        for scale, helpers in ((1, 1), (4, 4)):
            result = measure(Path(tmp), scale * args.partitions, args.per_partition, args.groups, helpers)
            print(json.dumps({"helpers": helpers, **result}), flush=True)


if __name__ == "__main__":
    main()
