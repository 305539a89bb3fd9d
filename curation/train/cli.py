"""``curate train manifest=... [config=train_demo] [dotted.key=value ...]``.

Runs single-process as is, and distributed under torchrun (one process per
GPU; RANK / WORLD_SIZE / LOCAL_RANK from the environment)::

    torchrun --nproc_per_node 8 -m curation.train.cli manifest=runs/x/shards/manifest.json model=vit_large

or inside a job whose process group already exists (Ray Train); see docs/train.md.
"""

from __future__ import annotations

import logging
import os
import sys


def train_main(overrides: list[str]) -> int:
    """Parse ``key=value`` overrides into a TrainConfig and train; returns 0.

    Errors are raised: ConfigError before any work, CheckpointError /
    ManifestError / TrainingDiverged (a RunError) during it."""
    from curation.train.config import load_train_config
    from curation.train.loop import train

    cfg = load_train_config(overrides)
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format=f"%(asctime)s [rank {rank}] %(name)s: %(message)s",
    )
    if rank == 0:
        log = logging.getLogger("curation.train")
        log.info(plan_line(cfg))
        warning = memory_warning(cfg)
        if warning:
            log.warning(warning)
    train(cfg)
    return 0


def plan_line(cfg) -> str:
    """What one iteration is and when the first log line comes: a CPU iteration of the full recipe takes minutes."""
    crops = f"2 global {cfg.crops.global_size} px + {cfg.crops.num_local} local {cfg.local_size} px crops"
    return (
        f"training {cfg.model} on {cfg.manifest} (device {cfg.device}): {cfg.optim.batch_size} images x ({crops}) "
        f"per rank per iteration, {cfg.total_iterations} iterations; a log line after the first iteration, then "
        f"every {cfg.log_every}; about {activation_gib(cfg):.1f} GiB of activations per rank on CPU (fp32)"
    )


# Measured: on CPU in fp32, ViT-S/14 with DINOv2's crops (2 x 224 px + 8 x 98 px), peak RSS grows by about
# 0.41 GiB per image of optim.batch_size: ~105 bytes per (student token x block x embed_dim), the student
# keeping every block's activations for the backward pass. The model, heads and optimiser add ~1.5 GiB
# (peak RSS 2.36 GiB at batch 2, 3.18 GiB at batch 4; data.num_workers=0).
BYTES_PER_TOKEN_DIM = 105


def activation_gib(cfg) -> float:
    """Activation memory of one rank's batch on CPU (fp32), from the measured constant above."""
    from curation.models.vit import ARCHS, parse_arch

    embed_dim, depth, _, _ = ARCHS[parse_arch(cfg.model)[0]]
    embed_dim, depth = cfg.vit.embed_dim or embed_dim, cfg.vit.depth or depth
    p = cfg.vit.patch_size
    tokens = 2 * ((cfg.crops.global_size // p) ** 2 + 1) + cfg.crops.num_local * ((cfg.local_size // p) ** 2 + 1)
    return cfg.optim.batch_size * tokens * depth * embed_dim * BYTES_PER_TOKEN_DIM / 2**30


def memory_warning(cfg) -> str | None:
    """On a CPU run, a warning when the batch cannot fit in the memory available now."""
    import torch

    if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()):
        return None
    available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30
    need = activation_gib(cfg) + 1.5
    if need <= available:
        return None
    return (
        f"this CPU run needs about {need:.0f} GiB (optim.batch_size={cfg.optim.batch_size}) but "
        f"{available:.0f} GiB is available: it will likely run out of memory. Lower optim.batch_size, or start "
        f"from config=train_demo (a tiny ViT sized for a laptop)"
    )


def main() -> int:
    """``torchrun -m curation.train.cli ...``: expected failures end in one line, as with ``curate train``."""
    from curation.exits import run_command

    return run_command(lambda: train_main(sys.argv[1:]), debug=os.environ.get("CURATE_DEBUG") == "1")


if __name__ == "__main__":
    sys.exit(main())
