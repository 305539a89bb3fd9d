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
        logging.getLogger("curation.train").info(plan_line(cfg))
    train(cfg)
    return 0


def plan_line(cfg) -> str:
    """What one iteration is and when the first log line comes: a CPU iteration of the full recipe takes minutes."""
    crops = f"2 global {cfg.crops.global_size} px + {cfg.crops.num_local} local {cfg.local_size} px crops"
    return (f"training {cfg.model} on {cfg.manifest} (device {cfg.device}): {cfg.optim.batch_size} images x ({crops}) "
            f"per rank per iteration, {cfg.total_iterations} iterations; a log line after the first iteration, then "
            f"every {cfg.log_every}. Memory grows with optim.batch_size; see docs/train.md for what the defaults need")


def main() -> int:
    from curation.errors import CurationError

    try:
        return train_main(sys.argv[1:])
    except CurationError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
