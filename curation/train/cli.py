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
    train(cfg)
    return 0


def main() -> int:
    from curation.errors import CurationError

    try:
        return train_main(sys.argv[1:])
    except CurationError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
