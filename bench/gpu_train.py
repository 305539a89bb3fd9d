"""Trainer throughput on one GPU: images/s, peak memory and MFU for the paper's
ViT-L/14 and ViT-g/14 recipes at their per-GPU batch sizes (32 and 12; 2 global
crops at 224 + 8 local at 98; K = 131,072 for both heads, untied; SwiGLU;
drop path 0.4; bf16 parameters, fp32 head reductions), efficient path and,
optionally, the naive one (``VisionTransformer.naive``) in the same run.

The step is the trainer's own (``loop.train_step`` under FSDP2 with one
rank): teacher forward, packed student forward/backward, losses, clipping,
AdamW and the EMA update. Batches are synthetic uint8 crops made once, so the
data loader is not measured.

MFU counts, as the performance notes do, the student's forward+backward
(3x forward) over 2x224 + 8x98 crops scaled by the kept fraction of stochastic
depth (1 - 0.4), the teacher's forward over the 2 global crops, and the heads
on CLS and masked-patch rows, against the GPU's dense bf16 peak.

    python bench/gpu_train.py                              # both models, efficient path
    python bench/gpu_train.py --models vit_large --variants efficient,naive
    python bench/gpu_train.py --smoke --device cpu         # a tiny model: checks the script runs
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

RECIPES = {  # per-GPU batch from dinov2/configs/train/vitl14.yaml and vitg14.yaml
    "vit_large": {"batch": 32, "ffn": "swiglu"},
    "vit_giant2": {"batch": 12, "ffn": "swiglu"},
}
PEAK_BF16 = {"H100 PCIe": 756e12, "H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12}


def peak_flops(device_name: str, override: float | None) -> float | None:
    if override:
        return override * 1e12
    for key, value in PEAK_BF16.items():  # "H100 PCIe" before "H100"
        if key in device_name:
            return value
    return None


def recipe_config(model: str, batch: int, ffn: str, smoke: bool, device: str):
    from curation.train.config import validate_train_config

    vit = {"patch_size": 14, "drop_path_rate": 0.4, "ffn": ffn}
    heads = {"dino_prototypes": 131072, "ibot_prototypes": 131072, "dino_bottleneck": 384, "separate_ibot_head": True}
    crops = {"global_size": 224, "local_size": 98, "num_local": 8}
    if smoke:
        vit.update(embed_dim=64, depth=2, num_heads=1)
        heads.update(dino_prototypes=256, ibot_prototypes=256, hidden_dim=64, dino_bottleneck=32, ibot_bottleneck=32)
        crops.update(global_size=56, local_size=28)
    return validate_train_config(
        {
            "manifest": "unused",
            "model": model,
            "device": device,
            "vit": vit,
            "heads": heads,
            "crops": crops,
            "optim": {"batch_size": batch, "iterations": 1000, "warmup_iterations": 10, "layerwise_decay": 1.0},
            "fsdp": {"param_dtype": "bf16" if device != "cpu" else "fp32"},
        }
    )


def synthetic_batch(cfg, seed: int, device):
    import torch

    from curation.train.data.collate import Collate

    g = torch.Generator().manual_seed(seed)
    b, gs, ls, n_local = cfg.optim.batch_size, cfg.crops.global_size, cfg.local_size, cfg.crops.num_local
    grid = gs // cfg.vit.patch_size

    def crops(n, size):
        return [torch.randint(0, 256, (3, size, size), generator=g, dtype=torch.uint8) for _ in range(n)]

    samples = [
        {"global": crops(2, gs), "local": crops(n_local, ls), "state": torch.tensor([0, 0, i + 1, 0, 0]), "key": str(i)}
        for i in range(b)
    ]
    batch = Collate((grid, grid), seed=seed)(samples)
    pin = device.type == "cuda"
    return {k: (v.pin_memory() if pin and hasattr(v, "pin_memory") else v) for k, v in batch.items()}


def flops_per_sample(meta, cfg, masked_fraction: float) -> float:
    from curation.models.vit import flops_per_image

    backbone = meta.student["backbone"]
    n_local, d = cfg.crops.num_local, backbone.embed_dim
    student = 2 * flops_per_image(backbone, cfg.crops.global_size) + n_local * flops_per_image(backbone, cfg.local_size)
    teacher = 2 * flops_per_image(backbone, cfg.crops.global_size)
    h = cfg.heads
    mlp = d * h.hidden_dim + h.hidden_dim**2 + h.hidden_dim * h.dino_bottleneck
    head_row = 2 * (mlp + h.dino_bottleneck * h.dino_prototypes)
    patches = (cfg.crops.global_size // cfg.vit.patch_size) ** 2 * 2 * masked_fraction
    heads = head_row * (3 * (2 + n_local + patches) + (2 + patches))
    return 3 * student * (1 - cfg.vit.drop_path_rate) + teacher + heads


def measure(model: str, variant: str, args, ctx) -> dict:
    import torch

    from curation.train.fsdp import shard_meta_arch
    from curation.train.loop import build_optimizer, run_schedules, train_step
    from curation.train.meta_arch import SSLMetaArch

    recipe = RECIPES[model]
    cfg = recipe_config(model, args.batch or recipe["batch"], recipe["ffn"], args.smoke, args.device)
    torch.manual_seed(0)
    meta = SSLMetaArch(cfg)
    for part in (meta.student, meta.teacher):
        part["backbone"].naive = variant == "naive"
    shard_meta_arch(meta, cfg, ctx.device)
    meta.train()
    optimizer = build_optimizer(cfg, meta)
    values = run_schedules(cfg, 1).at(100)
    batches = [synthetic_batch(cfg, s, ctx.device) for s in range(2)]
    masked = float(batches[0]["masks"].float().mean())
    cuda = ctx.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(args.warmup + args.steps):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        train_step(meta, optimizer, batches[i % 2], values, 3.0)
        if cuda:
            torch.cuda.synchronize()
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
    step = sorted(times)[len(times) // 2]
    images_per_s = cfg.optim.batch_size / step
    name = torch.cuda.get_device_name(ctx.device) if cuda else "cpu"
    peak = peak_flops(name, args.peak_tflops)
    flops = flops_per_sample(meta, cfg, masked)
    return {
        "model": model,
        "variant": variant,
        "device": name,
        "batch": cfg.optim.batch_size,
        "step_s": round(step, 4),
        "images_per_s": round(images_per_s, 2),
        "peak_memory_gib": round(torch.cuda.max_memory_allocated(ctx.device) / 2**30, 2) if cuda else None,
        "tflop_per_sample": round(flops / 1e12, 3),
        "achieved_tflops": round(flops * images_per_s / 1e12, 1),
        "mfu": round(flops * images_per_s / peak, 3) if peak else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="vit_large,vit_giant2")
    parser.add_argument("--variants", default="efficient", help="efficient, naive or both (comma-separated)")
    parser.add_argument("--batch", type=int, default=None, help="override the recipe's per-GPU batch")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    parser.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak when not detected")
    parser.add_argument("--smoke", action="store_true", help="tiny dimensions (checks the script on CPU)")
    args = parser.parse_args()

    import torch

    from curation.train.fsdp import close_distributed, init_distributed

    ctx = init_distributed(args.device)
    if ctx.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    try:
        for model in args.models.split(","):
            for variant in args.variants.split(","):
                try:
                    result = measure(model, variant, args, ctx)
                except torch.OutOfMemoryError as err:
                    result = {"model": model, "variant": variant, "error": f"out of memory: {str(err)[:120]}"}
                    torch.cuda.empty_cache()
                print(json.dumps(result), flush=True)
    finally:
        close_distributed(ctx)


if __name__ == "__main__":
    main()
