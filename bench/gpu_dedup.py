"""The dedup helpers' k-NN blocks on one GPU against the same code on the CPU: same neighbours, and the rates
that ``curate plan`` takes from published Faiss figures (``knn_gpu``, ``gemm_gpu``), measured instead.

Synthetic unit descriptors in ``--parts`` blocks, one shared quantizer of ``--nlist`` lists trained on the
CPU; :func:`curation.algorithms.knn_blocks.block_topk` runs over the blocks with ``Device(gpu=False)`` and
``Device(gpu=True)`` (every index copied to GPU 0), flat and with the inverted lists. Prints the agreement of
the neighbour ids, the seconds of each, the scan's multiply-adds per second (queries x vectors scanned x d)
and the list assignment's (a GEMM). Needs faiss-gpu and a GPU; exits with 1 when the ids disagree on more
than ``--tolerance`` of the rows (ties and float rounding may reorder equal neighbours).

    python bench/gpu_dedup.py --n 2000000 --queries 200000 --parts 16 --nlist 4096 --nprobe 32
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def main() -> int:
    import faiss

    from curation.algorithms.knn_blocks import Coarse, Device, block_topk, on_gpu

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=200_000)
    parser.add_argument("--parts", type=int, default=16)
    parser.add_argument("--nlist", type=int, default=4096)
    parser.add_argument("--nprobe", type=int, default=32)
    parser.add_argument("--k", type=int, default=64)
    parser.add_argument("--tolerance", type=float, default=0.001)
    args = parser.parse_args()
    print(f"faiss {faiss.__version__}, GPUs seen: {faiss.get_num_gpus()}, GPU branch taken: {on_gpu(1)}")
    if not on_gpu(1):
        print("no GPU seen by faiss: nothing to compare")
        return 1
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.n, args.dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    cuts = np.linspace(0, args.n, args.parts + 1).astype(np.int64)
    queries = x[: args.queries]
    host = Coarse.train(x[:: max(1, args.n // (64 * args.nlist))], args.nlist, args.nprobe)
    lists = host.lists(x)
    blocks = [(int(a), x[a:b], lists[a:b]) for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
    flat_blocks = [(a, b) for a, b, _ in blocks]
    bad = 0
    for name, use in (("flat", False), ("ivf", True)):
        out = {}
        for device in (Device(False), Device(True)):
            coarse = Coarse(host.centroids, args.nprobe, device) if use else None
            n_q = min(args.queries, 20_000) if not use else args.queries  # flat scans everything: fewer queries
            t0 = time.perf_counter()
            out[device.gpu] = block_topk(queries[:n_q], blocks if use else flat_blocks, args.k, args.n, coarse, device)
            seconds = time.perf_counter() - t0
            scanned = args.n * (args.nprobe / args.nlist if use else 1)
            print(
                f"{name} on {'GPU' if device.gpu else 'CPU'}: {n_q:,} queries in {seconds:.1f} s, "
                f"{n_q * scanned * args.dim / seconds:.3g} MAC/s"
            )
        rows = (out[False][1] != out[True][1]).any(axis=1).mean()
        print(
            f"{name}: rows whose ids differ {rows:.5f}; max |sim difference| "
            f"{np.abs(out[False][0] - out[True][0]).max():.2e}"
        )
        bad += rows > args.tolerance
    gpu = Coarse(host.centroids, args.nprobe, Device(True))
    t0 = time.perf_counter()
    gpu.assign(queries)
    seconds = time.perf_counter() - t0
    print(f"list assignment (GEMM) on GPU: {args.queries * args.nlist * args.dim / seconds:.3g} MAC/s")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
