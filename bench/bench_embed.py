"""Embedding throughput: the package's ViT against timm's VisionTransformer.

Both models hold the same weights (the package's ViT is converted from the timm
one, and the script checks that their features agree), see the same batch and
dtype, and are timed alternately in the same process, each under
``torch.inference_mode``. The package's ViT gets channels-last input (its patch
embedding then yields tokens without a copy); timm gets the layout it expects.

    python bench/bench_embed.py --arch vit_base16 --batch 16 --iters 8
    python bench/bench_embed.py --arch vit_huge16 --batch 4 --dtype bf16

``--steps`` measures instead the two steps that run a model on images, the
dedup descriptor (SSCD) and the embed pool, through their one inference path
(``curation.models.inference``), on the download bench's web corpus as the
download stage stores it (shorter side at most 512 px, JPEG q90, in memory):
images/s of decoding alone (the step's decode threads), of the model alone
(on pre-decoded pixels), and of the step's loop (decoding one batch ahead of
the model), with what running them one after the other would give.

    python bench/bench_embed.py --steps --arch vit_small16 --images 128 --batch 32
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from contextlib import nullcontext
from pathlib import Path

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
    kwargs = dict(
        img_size=img_size,
        patch_size=config["patch_size"],
        embed_dim=dim,
        depth=config["depth"],
        num_heads=config["num_heads"],
        num_classes=0,
        qkv_bias=True,
    )
    if config["ffn"] == "swiglu":
        kwargs.update(
            mlp_layer=SwiGLUPacked,
            act_layer=torch.nn.SiLU,
            init_values=1e-5,
            mlp_ratio=2 * swiglu_hidden_dim(4 * dim) / dim,
        )
    return TimmViT(**kwargs).eval()


def seconds(model: torch.nn.Module, x: torch.Tensor, dtype: str) -> float:
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if dtype == "bf16" else nullcontext()
    start = time.perf_counter()
    with torch.inference_mode(), autocast:
        model(x)
    return time.perf_counter() - start


def _pixels(value):
    """The model input of a decoded value (SSCD decodes to an object holding it)."""
    return getattr(value, "pixels", value)


def step_rates(name: str, inference, decode, blobs: list[bytes], batch: int, repeats: int) -> dict[str, float]:
    """Images/s of decoding only, the model only, and the step's loop (decoding one batch ahead).

    The three alternate ``repeats`` times (a loaded machine moves under them); medians.
    """
    from curation import tables
    from curation.models.inference import Prefetch
    from curation.runner.partition import read_ahead
    from curation.stages.base import MapStep

    chunks = [blobs[i : i + batch] for i in range(0, len(blobs), batch)]
    pixels = [[_pixels(v) for v in inference.submit(chunk, decode).result().values] for chunk in chunks]
    batches = [
        tables.status_table([f"{i}:{j}" for j in range(len(c))], [tables.SUCCESS] * len(c))
        for i, c in enumerate(chunks)
    ]

    def decode_only():
        for chunk in chunks:
            inference.submit(chunk, decode).result()

    def model_only():
        for p in pixels:
            inference.forward(p)

    def step():
        prefetch = Prefetch(lambda b: inference.submit(chunks[int(b.column("key")[0].as_py().split(":")[0])], decode))

        class Step(MapStep):  # what the runner drives: prefetch(next batch), then process the current one
            alive_only = False

            def prefetch(self, batch):
                prefetch.start(batch)

        for b in read_ahead(Step(None), iter(batches)):
            inference.forward([_pixels(v) for v in prefetch.take(b).values])

    model_only()  # warm-up
    runs: dict[str, list[float]] = {"decode": [], "model": [], "step": []}
    for _ in range(repeats):
        for key, fn in (("decode", decode_only), ("model", model_only), ("step", step)):
            start = time.perf_counter()
            fn()
            runs[key].append(len(blobs) / (time.perf_counter() - start))
    rates = {key: statistics.median(r) for key, r in runs.items()}
    rates["serial"] = 1 / (1 / rates["decode"] + 1 / rates["model"])
    print(
        f"{name:24s} decode only {rates['decode']:7.1f}   model only {rates['model']:7.1f}   "
        f"step {rates['step']:7.1f}   (one after the other: {rates['serial']:.1f}) img/s",
        flush=True,
    )
    return rates


def bench_steps(args) -> None:
    """The dedup descriptor and the embed step on the same images, through ``Inference``."""
    import functools
    import os
    import sys

    from curation.models import sscd
    from curation.models.inference import Inference, decode_thread_count
    from curation.preprocess import PreprocessSpec, decode

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_download import make_corpus

    from curation.download.config import ImageConfig
    from curation.download.process import ImageProcessor

    corpus = make_corpus(args.corpus, 0)
    # What the steps read: the images as the download stage stores them (shorter side <= 512, q90).
    store = ImageProcessor(ImageConfig(size=args.stored_size))
    blobs = [store(p.read_bytes()).data for p in sorted(corpus.glob("*.jpg"))[: args.images]]
    threads = args.decode_threads or decode_thread_count(0, args.threads)
    print(
        f"{len(blobs)} JPEGs of the web corpus as stored (shorter side <= {args.stored_size}), batch {args.batch}, {threads} decode threads, "
        f"{args.threads} torch threads, CPU, load average {os.getloadavg()[0]:.1f}"
    )
    torch.manual_seed(0)
    spec = sscd.FeatureSpec(PreprocessSpec(320, mode="square", interpolation="bilinear", draft=True), 32, False)
    descriptor = Inference(sscd.SSCD(args.sscd_backbone, 512).eval(), "cpu", "fp32", args.batch, threads, dim=512)
    results = {
        "dedup descriptor": step_rates(
            f"dedup ({args.sscd_backbone} 320)", descriptor, sscd.decoder(spec), blobs, args.batch, args.repeats
        )
    }
    vit = build_vit(args.arch, img_size=args.img).eval()
    embed = Inference(vit, "cpu", "fp32", args.batch, threads)
    results["embed"] = step_rates(
        f"embed ({args.arch} {args.img})",
        embed,
        functools.partial(decode, spec=PreprocessSpec(args.img)),
        blobs,
        args.batch,
        args.repeats,
    )
    print(
        json.dumps(
            {
                "images": len(blobs),
                "batch": args.batch,
                "decode_threads": threads,
                "torch_threads": args.threads,
                "load": os.getloadavg()[0],
                "rates": results,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="vit_base16", help="build_vit name, e.g. vit_small16, vit_huge16")
    parser.add_argument("--img", type=int, default=224)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--iters", type=int, default=8, help="timed batches per model, alternating")
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", action="store_true", help="decode vs model vs step of the two image steps")
    parser.add_argument("--images", type=int, default=128, help="--steps: images of the web corpus")
    parser.add_argument("--corpus", type=int, default=1000, help="--steps: size of the corpus they come from")
    parser.add_argument("--decode-threads", type=int, default=0, help="--steps: 0 = two per torch thread")
    parser.add_argument("--sscd-backbone", default="resnet50", help="--steps: SSCD trunk (resnet50, resnet18)")
    parser.add_argument("--repeats", type=int, default=3, help="--steps: alternating runs of each measurement")
    parser.add_argument("--stored-size", type=int, default=512, help="--steps: download.image.size of the pool")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.steps:
        bench_steps(args)
        return

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
    print(
        f"{args.arch} @{args.img}, batch {args.batch}, {args.dtype}, {args.threads} threads, "
        f"max |feature diff| {max_diff:.2e}"
    )
    print(f"curation ViT: {rates['curation']:.2f} img/s   timm: {rates['timm']:.2f} img/s   ratio {ratio:.3f}x")
    print(
        json.dumps(
            {
                "arch": args.arch,
                "img": args.img,
                "batch": args.batch,
                "dtype": args.dtype,
                "threads": args.threads,
                "curation_img_s": rates["curation"],
                "timm_img_s": rates["timm"],
                "ratio": ratio,
                "max_feature_diff": max_diff,
            }
        )
    )


if __name__ == "__main__":
    main()
