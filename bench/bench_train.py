"""Trainer step on CPU: the efficient ViT path against the naive one, same run.

Efficient: one packed pass over global + local crops, fused attention
(``scaled_dot_product_attention``) and stochastic depth that computes the
residual branch on the kept samples only. Naive (``VisionTransformer.naive``):
one pass per crop group, softmax(QK^T)V written out, and stochastic depth that
computes every sample's branch and then masks it. Everything else (teacher,
heads, losses, AdamW, EMA) is the same code.

Each variant runs in its own fresh process (so peak RSS is its own), in
alternation, ``--repeats`` times; the script prints the median step time and
the peak memory of each, and the ratios.

    OMP_WAIT_POLICY=PASSIVE python bench/bench_train.py     # ViT-S/16 width, 6 blocks, 2x224 + 8x96, batch 8
    python bench/bench_train.py --depth 12 --batch 16 --threads 2
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def config(args):
    from curation.train.config import validate_train_config

    return validate_train_config(
        {
            "manifest": "unused",
            "model": "vit_small",
            "vit": {
                "embed_dim": args.embed_dim,
                "depth": args.depth,
                "num_heads": args.embed_dim // 64,
                "patch_size": args.patch_size,
                "drop_path_rate": args.drop_path,
            },
            "heads": {
                "dino_prototypes": args.prototypes,
                "ibot_prototypes": args.prototypes,
                "separate_ibot_head": True,
            },
            "crops": {"global_size": args.global_size, "local_size": args.local_size, "num_local": 8},
            "optim": {"batch_size": args.batch, "iterations": 1000, "warmup_iterations": 0},
            "device": "cpu",
        }
    )


def batch(args, step: int):
    import torch

    from curation.train.data.collate import Collate

    g = torch.Generator().manual_seed(step)
    grid = args.global_size // args.patch_size

    def crops(n, size):
        return [torch.randint(0, 256, (3, size, size), generator=g, dtype=torch.uint8) for _ in range(n)]

    samples = [
        {
            "global": crops(2, args.global_size),
            "local": crops(8, args.local_size),
            "state": torch.tensor([0, 0, step * args.batch + i + 1, 0, 0]),
            "key": str(i),
        }
        for i in range(args.batch)
    ]
    return Collate((grid, grid), seed=step)(samples)


def worker(args) -> None:
    """One variant in this process: prints {"step_s": [...], "peak_rss_mib": ..., "step_peak_mib": ...}."""
    import torch

    from curation.train.loop import build_optimizer, run_schedules, train_step
    from curation.train.meta_arch import SSLMetaArch

    torch.set_num_threads(args.threads)
    cfg = config(args)
    torch.manual_seed(0)
    meta = SSLMetaArch(cfg).train()
    for part in (meta.student, meta.teacher):
        part["backbone"].naive = args.variant == "naive"
    optimizer = build_optimizer(cfg, meta)
    values = run_schedules(cfg, 1).at(10)
    batches = [batch(args, s) for s in range(args.steps + args.warmup)]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for i, b in enumerate(batches):
        torch.manual_seed(i)
        start = time.perf_counter()
        train_step(meta, optimizer, b, values, 3.0)
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"step_s": times, "peak_rss_mib": peak / 1024, "step_peak_mib": (peak - before) / 1024}))


def run_variant(args, variant: str) -> dict:
    cmd = [sys.executable, __file__, "--variant", variant] + [
        f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if k not in ("variant", "repeats")
    ]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", choices=["efficient", "naive"], default=None)
    parser.add_argument("--embed-dim", type=int, default=384)
    parser.add_argument("--depth", type=int, default=6)
    parser.add_argument("--patch-size", type=int, default=16)
    parser.add_argument("--global-size", type=int, default=224)
    parser.add_argument("--local-size", type=int, default=96)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--prototypes", type=int, default=4096)
    parser.add_argument("--drop-path", type=float, default=0.4)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    if args.variant:
        worker(args)
        return
    results: dict[str, list[dict]] = {"efficient": [], "naive": []}
    for _ in range(args.repeats):
        for variant in results:
            results[variant].append(run_variant(args, variant))
    summary = {}
    for variant, runs in results.items():
        steps = [t for r in runs for t in r["step_s"]]
        summary[variant] = {
            "median_step_s": statistics.median(steps),
            "images_per_s": args.batch / statistics.median(steps),
            "peak_rss_mib": max(r["peak_rss_mib"] for r in runs),
            "step_peak_mib": max(r["step_peak_mib"] for r in runs),
        }
        s = summary[variant]
        print(
            f"{variant:>9}: {s['median_step_s']:.3f} s/step  {s['images_per_s']:.2f} img/s  "
            f"peak RSS {s['peak_rss_mib']:.0f} MiB (+{s['step_peak_mib']:.0f} MiB during steps)"
        )
    eff, naive = summary["efficient"], summary["naive"]
    print(
        f"speed-up efficient/naive: {naive['median_step_s'] / eff['median_step_s']:.2f}x; "
        f"step memory naive/efficient: {naive['step_peak_mib'] / max(eff['step_peak_mib'], 1e-9):.2f}x"
    )
    print(json.dumps({"args": vars(args), **summary}))


if __name__ == "__main__":
    main()
