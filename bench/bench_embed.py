"""Embedding throughput: the package's ViT against timm's VisionTransformer.

Both models hold the same weights (the package's ViT is converted from the timm
one, and the script checks that their features agree), see the same batch and
dtype, and are timed alternately in the same process, each under
``torch.inference_mode``. The package's ViT gets channels-last input (its patch
embedding then yields tokens without a copy); timm gets the layout it expects.

    python bench/bench_embed.py --arch vit_base16 --batch 16 --iters 8
    python bench/bench_embed.py --arch vit_huge16 --batch 4 --dtype bf16
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from contextlib import nullcontext

import torch

from curation.models.checkpoints import vit_from_timm
from curation.models.layers import swiglu_hidden_dim
from curation.models.vit import build_vit


def timm_twin(arch: str, img_size: int) -> torch.nn.Module:
    """timm's VisionTransformer with the dimensions of ``build_vit(arch)``."""
    from timm.layers import SwiGLUPacked
    from timm.models.vision_transformer import VisionTransformer as TimmViT

    with torch.device("meta"):  # the dimensions only, without allocating
        config = build_vit(arch, img_size=img_size).config
    dim = config["embed_dim"]
    kwargs = dict(img_size=img_size, patch_size=config["patch_size"], embed_dim=dim, depth=config["depth"],
                  num_heads=config["num_heads"], num_classes=0, qkv_bias=True)
    if config["ffn"] == "swiglu":
        kwargs.update(mlp_layer=SwiGLUPacked, act_layer=torch.nn.SiLU, init_values=1e-5,
                      mlp_ratio=2 * swiglu_hidden_dim(4 * dim) / dim)
    return TimmViT(**kwargs).eval()


def seconds(model: torch.nn.Module, x: torch.Tensor, dtype: str) -> float:
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if dtype == "bf16" else nullcontext()
    start = time.perf_counter()
    with torch.inference_mode(), autocast:
        model(x)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="vit_base16", help="build_vit name, e.g. vit_small16, vit_huge16")
    parser.add_argument("--img", type=int, default=224)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--iters", type=int, default=8, help="timed batches per model, alternating")
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    reference = timm_twin(args.arch, args.img)
    ours = vit_from_timm(reference)
    x = torch.randn(args.batch, 3, args.img, args.img)
    x_ours = x.contiguous(memory_format=torch.channels_last)
    ours = ours.to(memory_format=torch.channels_last)
    with torch.inference_mode():
        max_diff = (ours(x_ours) - reference(x)).abs().max().item()

    timings: dict[str, list[float]] = {"curation": [], "timm": []}
    seconds(ours, x_ours, args.dtype), seconds(reference, x, args.dtype)  # warm-up
    runs = [("curation", ours, x_ours), ("timm", reference, x)]
    for i in range(args.iters):  # alternate, swapping who goes first
        for name, model, batch in runs if i % 2 == 0 else runs[::-1]:
            timings[name].append(seconds(model, batch, args.dtype))
    rates = {name: args.batch / statistics.median(t) for name, t in timings.items()}
    ratio = rates["curation"] / rates["timm"]
    print(f"{args.arch} @{args.img}, batch {args.batch}, {args.dtype}, {args.threads} threads, "
          f"max |feature diff| {max_diff:.2e}")
    print(f"curation ViT: {rates['curation']:.2f} img/s   timm: {rates['timm']:.2f} img/s   "
          f"ratio {ratio:.3f}x")
    print(json.dumps({"arch": args.arch, "img": args.img, "batch": args.batch, "dtype": args.dtype,
                      "threads": args.threads, "curation_img_s": rates["curation"],
                      "timm_img_s": rates["timm"], "ratio": ratio, "max_feature_diff": max_diff}))


if __name__ == "__main__":
    main()
