"""Tiny configs, synthetic batches and a 2-process launcher for the trainer tests."""

from __future__ import annotations

import json
import os
import socket
from typing import Any

import numpy as np
import torch

from curation.train.config import TrainConfig, validate_train_config
from curation.train.data.collate import Collate

TINY: dict[str, Any] = {
    "model": "vit_small",
    "vit": {"embed_dim": 32, "depth": 2, "num_heads": 2, "patch_size": 8, "drop_path_rate": 0.0},
    "heads": {
        "dino_prototypes": 64,
        "ibot_prototypes": 48,
        "hidden_dim": 64,
        "dino_bottleneck": 16,
        "ibot_bottleneck": 16,
        "separate_ibot_head": True,
    },
    "crops": {"global_size": 32, "local_size": 16, "num_local": 2},
    "optim": {
        "iterations": 6,
        "batch_size": 8,
        "warmup_iterations": 2,
        "freeze_last_layer_iterations": 1,
        "base_lr": 0.05,
    },
    "loss": {"warmup_teacher_temp_iterations": 2},
    "data": {"num_workers": 0, "shuffle_buffer": 8},
    "checkpoint": {"every": 3},
    "log_every": 1,
    "device": "cpu",
}


def merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def tiny_config(**extra: Any) -> TrainConfig:
    return validate_train_config(merge(merge(TINY, {"manifest": "unused.json"}), extra))


def run_config(shards_dir, out, **extra) -> TrainConfig:
    return tiny_config(manifest=str(shards_dir / "manifest.json"), output_dir=str(out), **extra)


def records(out) -> list[dict]:
    """The records of ``out/metrics.jsonl``."""
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def make_batch(step: int, images: int = 8, size: int = 32, local: int = 16, num_local: int = 2, grid: int = 4):
    """A deterministic collated batch of random uint8 crops for ``images`` images."""
    g = torch.Generator().manual_seed(1000 + step)
    samples = [
        {
            "global": [torch.randint(0, 256, (3, size, size), generator=g, dtype=torch.uint8) for _ in range(2)],
            "local": [
                torch.randint(0, 256, (3, local, local), generator=g, dtype=torch.uint8) for _ in range(num_local)
            ],
            "state": torch.tensor([0, 0, step * images + i + 1, 0, 0]),
            "key": f"{step}-{i}",
        }
        for i in range(images)
    ]
    return Collate((grid, grid), seed=step)(samples)


def shard_batch(batch: dict, rank: int, world: int) -> dict:
    """This rank's images of a crop-major batch."""

    def part(x: torch.Tensor) -> torch.Tensor:
        n = batch["state"].shape[0]
        crops = x.shape[0] // n
        per = n // world
        return x.view(crops, n, *x.shape[1:])[:, rank * per : (rank + 1) * per].reshape(-1, *x.shape[1:])

    out = {k: part(batch[k]) for k in ("global_crops", "local_crops", "masks", "state")}
    out["keys"] = batch["keys"]
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, world: int, port: int, fn, args) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
        OMP_NUM_THREADS="1",
    )
    torch.set_num_threads(1)
    fn(rank, world, *args)


def spawn(fn, world: int, *args) -> None:
    """Run ``fn(rank, world, *args)`` in ``world`` fresh processes (gloo on 127.0.0.1)."""
    import torch.multiprocessing as mp

    mp.spawn(_entry, args=(world, free_port(), fn, args), nprocs=world, join=True)


def teacher_params(meta) -> dict[str, np.ndarray]:
    """Full (gathered) teacher parameters; collective under FSDP."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(meta.teacher, options=StateDictOptions(full_state_dict=True))
    return {k: v.detach().float().numpy() for k, v in state.items()}
