"""Functions run in spawned ranks by the distributed tests (importable by spawn)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from tests.train.helpers import make_batch, shard_batch, teacher_params, tiny_config

STEPS = 6
SAVE_AT = 3


def equivalence_config(batch_size: int):
    # No KoLeo (per-rank by design) and no stochastic depth (random per rank):
    # everything else must match a single process on the whole batch.
    return tiny_config(loss={"koleo_weight": 0.0}, optim={"batch_size": batch_size})


def setup(cfg, world: int):
    from curation.train.fsdp import shard_meta_arch
    from curation.train.loop import build_optimizer, run_schedules
    from curation.train.meta_arch import SSLMetaArch

    torch.manual_seed(cfg.seed)
    meta = SSLMetaArch(cfg)
    shard_meta_arch(meta, cfg, torch.device("cpu"))
    return meta.train(), build_optimizer(cfg, meta), run_schedules(cfg, world)


def run_steps(meta, optimizer, schedules, steps, rank: int, world: int, on_step=None) -> list[dict]:
    from curation.train.loop import train_step

    out = []
    for it in steps:
        if on_step:
            on_step(it)
        batch = shard_batch(make_batch(it), rank, world)
        losses, norms = train_step(meta, optimizer, batch, schedules.at(it), 3.0)
        assert norms is not None
        out.append(losses)
    return out


def _mean_over_ranks(losses: list[dict]) -> list[dict]:
    names = sorted(losses[0])
    values = torch.tensor([[step[n] for n in names] for step in losses], dtype=torch.float64)
    dist.all_reduce(values)
    values /= dist.get_world_size()
    return [dict(zip(names, row.tolist(), strict=False)) for row in values]


def _sinkhorn_uneven(rank: int, out: Path) -> None:
    """Ranks holding 8 and 4 rows (iBOT-like): gathered Q -> out/sinkhorn.npy."""
    from curation.train.losses.centering import sinkhorn_knopp

    logits = torch.randn(12, 10, generator=torch.Generator().manual_seed(0))
    mine = logits[:8] if rank == 0 else logits[8:]
    parts = [None, None]
    dist.all_gather_object(parts, sinkhorn_knopp(mine, 0.1).numpy())
    if rank == 0:
        np.save(out / "sinkhorn.npy", np.concatenate(parts))


def fsdp_worker(rank: int, world: int, out_dir: str, manifest: str) -> None:
    from curation.train import checkpoint as ckpt
    from curation.train.fsdp import close_distributed, init_distributed
    from curation.train.loop import train

    ctx = init_distributed("cpu")
    out = Path(out_dir)
    _sinkhorn_uneven(rank, out)

    cfg = equivalence_config(batch_size=8 // world)
    meta, optimizer, schedules = setup(cfg, world)

    def save(it: int) -> None:
        if it == SAVE_AT:
            state = {"data": [], "world_size": world, "config": cfg.model_dump(mode="json")}
            ckpt.save_checkpoint(out / "ckpt", it, meta, optimizer, state, keep=2, is_main=rank == 0)

    losses = _mean_over_ranks(run_steps(meta, optimizer, schedules, range(STEPS), rank, world, save))
    params = teacher_params(meta)
    if rank == 0:
        (out / "losses.json").write_text(json.dumps(losses))
        np.savez(out / "teacher.npz", **params)

    loop_cfg = tiny_config(
        manifest=manifest,
        output_dir=str(out / "loop"),
        optim={"iterations": 4, "batch_size": 4},
        checkpoint={"every": 2},
    )
    train(loop_cfg)  # joins the existing process group
    close_distributed(ctx)
