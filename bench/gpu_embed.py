"""GPU embedding throughput of ViT-H/16 in bf16, against the FLOP bound and timm.

Times the package's ViT and timm's VisionTransformer of the same architecture
with the same weights, alternately in one process, bf16 weights and inputs,
channels-last, ``torch.inference_mode``, CUDA-event timing. Prints images/s,
achieved TFLOP/s, the fraction of the GPU's dense bf16 peak (a table keyed by
device name) and the ratio to timm.

    python bench/gpu_embed.py --batch 256 --iters 20
    python bench/gpu_embed.py --arch vit_huge16 --compile
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch
from bench_embed import timm_twin  # same folder: the timm model of the same architecture

from curation.models.checkpoints import vit_from_timm
from curation.models.vit import flops_per_image

# Dense bf16 tensor-core peaks, TFLOP/s (datasheets); V100 has no bf16: its fp16 peak.
PEAK_TFLOPS = {
    "H200": 989.0,
    "H100 PCIe": 756.0,
    "H100": 989.0,  # SXM5 (H100 80GB HBM3)
    "A100": 312.0,
    "V100": 125.0,
    "L40S": 362.0,
    "A10G": 70.0,
}


def peak_tflops(device_name: str) -> float | None:
    """Looks up the first table key contained in the device name (most specific first)."""
    for key in sorted(PEAK_TFLOPS, key=len, reverse=True):
        if key in device_name:
            return PEAK_TFLOPS[key]
    return None


def time_batches(model: torch.nn.Module, x: torch.Tensor, iters: int) -> list[float]:
    """Seconds per batch, measured with CUDA events after two warm-up batches."""
    times = []
    with torch.inference_mode():
        for i in range(iters + 2):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            model(x)
            end.record()
            torch.cuda.synchronize()
            if i >= 2:
                times.append(start.elapsed_time(end) / 1000.0)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="vit_huge16")
    parser.add_argument("--img", type=int, default=224)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--compile", action="store_true", help="torch.compile both models")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this benchmark needs a GPU")
    torch.backends.cuda.matmul.allow_tf32 = True
    device = torch.device("cuda")
    name = torch.cuda.get_device_name(device)

    torch.manual_seed(0)
    reference = timm_twin(args.arch, args.img)
    ours = vit_from_timm(reference)
    models = {
        "curation": ours.to(device, torch.bfloat16, memory_format=torch.channels_last),
        "timm": reference.to(device, torch.bfloat16),
    }
    if args.compile:
        models = {k: torch.compile(m) for k, m in models.items()}
    x = torch.randn(args.batch, 3, args.img, args.img, device=device, dtype=torch.bfloat16)
    inputs = {"curation": x.contiguous(memory_format=torch.channels_last), "timm": x}
    with torch.inference_mode():
        diff = (models["curation"](inputs["curation"]).float() - models["timm"](x).float()).abs().max().item()

    timings: dict[str, list[float]] = {k: [] for k in models}
    for _ in range(3):  # alternate rounds so that clocks and heat affect both alike
        for key, model in models.items():
            timings[key] += time_batches(model, inputs[key], max(args.iters // 3, 1))
    rates = {k: args.batch / statistics.median(t) for k, t in timings.items()}
    gflops = flops_per_image(ours, args.img) / 1e9
    peak = peak_tflops(name)
    achieved = rates["curation"] * gflops / 1e3
    fraction = achieved / peak if peak else None
    print(
        f"{name}: {args.arch} @{args.img}, batch {args.batch}, bf16, compile={args.compile}, "
        f"{gflops:.1f} GFLOPs/img, max |feature diff| {diff:.3g}"
    )
    print(
        f"curation ViT: {rates['curation']:.1f} img/s = {achieved:.1f} TFLOP/s"
        + (f" = {fraction:.1%} of {peak:.0f} TF bf16 peak" if peak else " (peak unknown for this device)")
    )
    print(f"timm: {rates['timm']:.1f} img/s   ratio {rates['curation'] / rates['timm']:.3f}x")
    print(
        json.dumps(
            {
                "device": name,
                "arch": args.arch,
                "batch": args.batch,
                "compile": args.compile,
                "curation_img_s": rates["curation"],
                "timm_img_s": rates["timm"],
                "tflops": achieved,
                "peak_tflops": peak,
                "fraction_of_peak": fraction,
            }
        )
    )


if __name__ == "__main__":
    main()
