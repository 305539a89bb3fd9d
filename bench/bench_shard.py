"""The shard stage's planned, parallel writer vs the single-process writer, on one synthetic run.

A run directory as the retrieve stage leaves it (``tests/stages/shard/shard_upstream``:
``--partitions`` x ``--rows`` pool images of ``--mean-kb`` KB on average,
about 65 % of them written, some twice) is written both ways:

- sequential: the writer the stage ran before (``shard_sequential.write_sequential``),
  one loop in one process keeping an index of every source tar it touches;
  run in a child process, whose peak RSS is its ``ru_maxrss``;
- planned: the shard stage itself (``locate`` per pool partition, a global
  ``plan`` from tables, ``write`` per range of shards, ``manifest``) on a
  local Ray with ``--workers`` workers; peak RSS per worker from the steps'
  completion markers (``peak_rss_bytes``).

Both outputs are compared (same shards, byte for byte). Prints wall times,
their ratio and the memory of each.

    python bench/bench_shard.py --partitions 16 --rows 2000 --mean-kb 16 --workers 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

MB = 2**20


def sequential(run_dir: Path, data_path: Path, out: Path) -> None:
    """Child process: the single-process writer; prints its time and peak RSS as JSON."""
    from curation import config as cfg
    from curation.stages.registry import stage_context
    from curation.stages.shard.sequential import write_sequential

    data = json.loads(data_path.read_text())
    start = time.perf_counter()
    ctx = stage_context(cfg.validate({**data, "run_dir": str(run_dir)}), "shard")
    write_sequential(ctx, out / "shards", out / "staging")
    print(
        json.dumps(
            {
                "seconds": time.perf_counter() - start,
                "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            }
        )
    )


def planned(run_dir: Path, data: dict, workers: int) -> dict:
    import ray

    from curation import config as cfg
    from curation.atomic import read_json
    from curation.runner import run_pipeline

    ray.init(address="local", num_cpus=workers, include_dashboard=False, log_to_driver=False)
    try:
        data = {**data, "runner": {"progress": False, "max_workers": workers}}
        start = time.perf_counter()
        run_pipeline(cfg.validate(data), ["shard"])
        seconds = time.perf_counter() - start
    finally:
        ray.shutdown()
    stage = run_dir / "stages/shard"
    steps = {}
    for step in ("locate", "plan", "write", "manifest"):
        markers = [read_json(p) for p in stage.glob(f"{step}*/part-*.stats.json")] or [
            read_json(stage / step / "_SUCCESS.json")
        ]
        steps[step] = {
            "units": len(markers),
            "seconds": sum(m["duration_s"] for m in markers),
            "wall": max(m["finished"] for m in markers) - min(m["started"] for m in markers),
            "peak_rss_bytes": max(m["peak_rss_bytes"] for m in markers),
        }
    return {"seconds": seconds, "steps": steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--partitions", type=int, default=16)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--mean-kb", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--max-samples", type=int, default=1000)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        sequential(*(Path(a) for a in args.child))
        return
    from curation.manifest import read_manifest
    from tests.stages.shard import shard_upstream

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        run_dir = tmp / "run"
        start = time.perf_counter()
        shard_upstream.build(run_dir, args.partitions, args.rows, args.mean_kb * 1024)
        shard = {"max_samples_per_shard": args.max_samples, "shards_per_task": 1}
        data = shard_upstream.pipeline(run_dir, tmp / "sets", shard)
        pool_bytes = sum(p.stat().st_size for p in (run_dir / "stages/download").glob("fetch*/*.tar"))
        print(
            f"pool: {args.partitions} x {args.rows} images, {pool_bytes / MB:.0f} MB of tars "
            f"(built in {time.perf_counter() - start:.1f} s)"
        )
        (tmp / "data.json").write_text(json.dumps(data))
        child = subprocess.run(
            [sys.executable, __file__, "--child", str(run_dir), str(tmp / "data.json"), str(tmp / "sequential")],
            capture_output=True,
            text=True,
            check=True,
        )
        old = json.loads(child.stdout.strip().splitlines()[-1])
        new = planned(run_dir, data, args.workers)
        got = read_manifest(run_dir / "shards/manifest.json")
        want = read_manifest(tmp / "sequential/shards/manifest.json")
        same = got.shards == want.shards
        print(
            f"shards: {len(got.shards)}, samples: {got.num_samples}, {got.num_bytes / MB:.0f} MB; "
            f"identical to the sequential writer's: {same}"
        )
        print(f"sequential writer: {old['seconds']:.2f} s, peak RSS {old['peak_rss_bytes'] / MB:.0f} MB (one process)")
        print(
            f"planned writer ({args.workers} workers, whole stage: five steps incl. the stage table, "
            f"Ray workers started): {new['seconds']:.2f} s"
        )
        for step, s in new["steps"].items():
            print(
                f"  {step:9s} {s['units']:4d} units, {s['wall']:7.2f} s wall, {s['seconds']:7.2f} s summed, "
                f"peak RSS per worker {s['peak_rss_bytes'] / MB:.0f} MB"
            )
        work = sum(s["wall"] for s in new["steps"].values())
        print(
            f"planned steps' wall time (locate + plan + write + manifest): {work:.2f} s; "
            f"ratio sequential / planned steps: {old['seconds'] / work:.2f}"
        )
        print(f"ratio sequential / whole planned stage: {old['seconds'] / new['seconds']:.2f}")
        if not same:
            raise SystemExit("the two writers disagree")


if __name__ == "__main__":
    main()
