"""The training loop. Everything else is set up by the helpers below it."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from curation.config import diff
from curation.errors import RunError
from curation.manifest import read_manifest
from curation.train import checkpoint as ckpt
from curation.train.config import TrainConfig
from curation.train.data.loader import StreamTracker, build_loader, resume_states
from curation.train.fsdp import (
    clip_grad_norms,
    close_distributed,
    compile_blocks,
    init_distributed,
    param_dtype,
    shard_meta_arch,
)
from curation.train.metrics import MetricsLog
from curation.train.param_groups import apply_schedule, build_param_groups
from curation.train.schedules import ScheduleSpec, build_run_schedules, sqrt_scaled_lr

log = logging.getLogger(__name__)


class TrainingDiverged(RunError):
    """The loss became NaN or infinite; the run stopped before the update."""


def train(cfg: TrainConfig) -> Path:
    """Train on ``cfg.manifest``; returns the exported backbone file."""
    ctx = init_distributed(cfg.device)
    try:
        return _train(cfg, ctx)
    finally:
        close_distributed(ctx)


def _train(cfg: TrainConfig, ctx) -> Path:
    from curation.train.distill import build_meta_arch
    from curation.train.export import export_backbone
    from curation.train.knn_eval import run_knn

    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    meta = build_meta_arch(cfg)
    shard_meta_arch(meta, cfg, ctx.device)
    if cfg.compile:
        compile_blocks(meta)
    optimizer = build_optimizer(cfg, meta)
    scaler = grad_scaler(cfg, ctx.device)
    schedules = run_schedules(cfg, ctx.world_size)
    start, data_start, last_ckpt = resume(cfg, meta, optimizer, ctx, scaler)
    manifest = read_manifest(cfg.manifest)
    tracker = StreamTracker(ctx.rank, max(cfg.data.num_workers, 1), data_start)
    metrics = MetricsLog(Path(cfg.output_dir), cfg.optim.batch_size * ctx.world_size, ctx.is_main, ctx.device)
    meta.train()
    batches: Iterator[dict[str, Any]] = iter(())  # replaced at the first iteration: phase is None
    phase: str | None = None
    for it in range(start, cfg.total_iterations):
        if phase != phase_of(cfg, it):  # start, or switch to the high-resolution phase
            phase = phase_of(cfg, it)
            batches = iter(phase_loader(cfg, manifest, ctx, phase, tracker.states, meta))
        batch = next(batches)
        tracker.update(batch["state"])
        values = schedules.at(it)
        torch.manual_seed(step_seed(cfg.seed, ctx.rank, it))  # drop path: reproducible on resume
        losses, norms = train_step(meta, optimizer, batch, values, cfg.optim.clip_grad, scaler)
        if norms is None:
            raise diverged(losses, it, last_ckpt)
        # The first iteration is logged too: on a CPU it can take minutes to reach log_every.
        log_now = (it + 1) % cfg.log_every == 0 or it == start
        metrics.step(it, losses, values, norms, tracker.counters(), log_now=log_now)
        done = it + 1 == cfg.total_iterations
        with metrics.paused():  # checkpoints and evaluations do not count against throughput
            if (it + 1) % cfg.checkpoint.every == 0 or done:
                last_ckpt = save(cfg, ctx, it + 1, meta, optimizer, tracker, scaler)
            if cfg.knn.path and (done or (cfg.knn.every and (it + 1) % cfg.knn.every == 0)):
                metrics.record(it, run_knn(cfg, meta.ema_target["backbone"], ctx.device))
    return export_backbone(cfg, meta.ema_target["backbone"], ctx.is_main)


def save(cfg: TrainConfig, ctx, iteration: int, meta, optimizer, tracker: StreamTracker, scaler) -> Path:
    state = {"data": tracker.gather(ctx.device), "world_size": ctx.world_size, "config": cfg.model_dump(mode="json")}
    if scaler is not None:
        state["grad_scaler"] = scaler.state_dict()
    root = ckpt.checkpoint_root(cfg.output_dir)
    return ckpt.save_checkpoint(
        root, iteration, meta, optimizer, state, cfg.checkpoint.keep, ctx.is_main, skip=meta.frozen_prefixes
    )


def build_optimizer(cfg: TrainConfig, meta) -> torch.optim.Optimizer:
    backbone = meta.student["backbone"]
    modules = [(module, name == "backbone") for name, module in meta.student.items()]
    groups = build_param_groups(modules, len(backbone.blocks), cfg.optim.layerwise_decay, cfg.optim.patch_embed_lr_mult)
    return torch.optim.AdamW(groups, lr=0.0, betas=cfg.optim.betas)


def run_schedules(cfg: TrainConfig, world_size: int):
    o, loss = cfg.optim, cfg.loss
    spec = ScheduleSpec(
        iterations=o.iterations,
        lr=sqrt_scaled_lr(o.base_lr, o.batch_size * world_size, o.reference_batch),
        min_lr=o.min_lr,
        warmup=o.warmup_iterations,
        weight_decay=o.weight_decay,
        weight_decay_end=o.weight_decay_end,
        momentum=o.momentum_teacher,
        momentum_end=o.final_momentum_teacher,
        teacher_temp=loss.teacher_temp,
        teacher_temp_start=loss.warmup_teacher_temp,
        teacher_temp_warmup=loss.warmup_teacher_temp_iterations,
        freeze_last_layer=o.freeze_last_layer_iterations,
    )
    return build_run_schedules(spec, cfg.highres.iterations, cfg.highres.lr_scale)


def phase_of(cfg: TrainConfig, iteration: int) -> str:
    return "highres" if iteration >= cfg.optim.iterations else "main"


def phase_loader(cfg: TrainConfig, manifest, ctx, phase: str, states, meta):
    if phase == "highres":
        sizes = (cfg.highres.image_size, cfg.highres.local_size or cfg.local_size)
        log.info("high-resolution phase: global crops %d px, local crops %d px", *sizes)
    else:
        sizes = (cfg.crops.global_size, cfg.local_size)
    mask_probability = cfg.masking.probability if meta.mask_student else 0.0
    return build_loader(cfg, manifest, ctx.rank, ctx.world_size, *sizes, dict(states), mask_probability)


def step_seed(seed: int, rank: int, iteration: int) -> int:
    return int(np.random.SeedSequence([seed, rank, iteration]).generate_state(1)[0])


def grad_scaler(cfg: TrainConfig, device: torch.device):
    """Dynamic loss scaling, needed when parameters compute in fp16."""
    if param_dtype(cfg.fsdp.param_dtype, device) != torch.float16:
        return None
    from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler

    return ShardedGradScaler(device=device.type)


def resume(cfg: TrainConfig, meta, optimizer, ctx, scaler=None) -> tuple[int, dict, Path | None]:
    """(first iteration, data reader states, checkpoint) from checkpoint.resume."""
    root = ckpt.checkpoint_root(cfg.output_dir)
    if ctx.is_main:
        ckpt.remove_partial(root)
    setting = cfg.checkpoint.resume
    path = None if setting == "none" else ckpt.latest_checkpoint(root) if setting == "auto" else Path(setting)
    if path is None:
        return 0, {}, None
    state = ckpt.load_checkpoint(path, meta, optimizer, skip=meta.frozen_prefixes)
    if scaler is not None and "grad_scaler" in state:
        scaler.load_state_dict(state["grad_scaler"])
    log.info("resumed from %s at iteration %d (saved by %d ranks)", path, state["iteration"], state["world_size"])
    changed = diff(state.get("config", {}), cfg.model_dump(mode="json"))
    if changed:
        log.warning("the config differs from the checkpoint's: %s", "; ".join(changed))
    readers = max(cfg.data.num_workers, 1)
    return state["iteration"], resume_states(state["data"], ctx.world_size, readers), path


def train_step(meta, optimizer, batch, values: dict[str, float], clip_grad: float, scaler=None):
    """One optimisation step: (loss terms, gradient norms), or (loss terms, None)
    without any update when the loss is not finite on some rank. ``scaler``:
    dynamic loss scaling for fp16 (a step with overflowing gradients is skipped)."""
    apply_schedule(optimizer, values["lr"], values["last_layer_lr"], values["weight_decay"])
    optimizer.zero_grad(set_to_none=True)
    losses = meta.forward_backward(batch, values["teacher_temp"], scaler)
    device = next(meta.student.parameters()).device
    bad = torch.tensor(0.0 if np.isfinite(losses["total"]) else 1.0, device=device)
    if torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        torch.distributed.all_reduce(bad)  # every rank stops together
    if bad.item():
        return losses, None
    if scaler is not None:
        scaler.unscale_(optimizer)
    norms = clip_grad_norms(meta.student, clip_grad)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    meta.update_teacher(values["momentum"])
    return losses, norms


def diverged(losses: dict[str, float], iteration: int, last_ckpt: Path | None) -> TrainingDiverged:
    where = f"the last good checkpoint is {last_ckpt}" if last_ckpt else "no checkpoint was written yet"
    return TrainingDiverged(
        f"loss is not finite at iteration {iteration} ({losses}); training stopped before the update. "
        f"{where}: resume from it (checkpoint.resume=auto) with a lower optim.base_lr or "
        f"a larger optim.warmup_iterations"
    )
