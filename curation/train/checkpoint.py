"""Sharded, resumable checkpoints with ``torch.distributed.checkpoint`` (DCP).

Layout under ``<output_dir>/checkpoints/``::

    step-000100/            one checkpoint: the iteration to run next is 100
      .metadata, __*_*.distcp   DCP files (model + optimiser, every rank's shards)
      train_state.json      iteration, data reader states, world size, config
                            (written last: its presence marks a complete checkpoint)

Every rank writes its shards into ``step-N.partial``; rank 0 then writes
``train_state.json`` and renames the directory. DCP stores tensors with their
global shapes, so a checkpoint loads into any number of ranks
(``get_state_dict`` / ``set_state_dict`` reshard).
"""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path
from typing import Any

import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

from curation.atomic import read_json, write_json
from curation.errors import CheckpointError

log = logging.getLogger(__name__)

STATE_FILE = "train_state.json"
_STEP = re.compile(r"^step-(\d{6,})$")


def checkpoint_root(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints under ``root``, oldest first."""
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP.match(p.name)) and (p / STATE_FILE).is_file()]
    return [p for _, p in sorted(found, key=lambda step_path: step_path[0])]


def latest_checkpoint(root: Path) -> Path | None:
    found = list_checkpoints(root)
    return found[-1] if found else None


def _state(meta: nn.Module, optimizer, skip: tuple[str, ...]) -> dict[str, Any]:
    model_sd, optim_sd = get_state_dict(meta, optimizer)
    model_sd = {k: v for k, v in model_sd.items() if not k.startswith(skip)}
    return {"model": model_sd, "optim": optim_sd}


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def save_checkpoint(
    root: Path,
    iteration: int,
    meta: nn.Module,
    optimizer,
    train_state: dict[str, Any],
    keep: int,
    is_main: bool,
    skip: tuple[str, ...] = (),
) -> Path:
    """Collective: every rank calls it. ``skip``: model key prefixes not saved
    (a frozen distillation teacher). Returns the checkpoint directory."""
    final = root / f"step-{iteration:06d}"
    partial = root / f"step-{iteration:06d}.partial"
    if is_main:
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
    _barrier()
    dcp.save(_state(meta, optimizer, skip), checkpoint_id=str(partial))
    _barrier()
    if is_main:
        write_json(partial / STATE_FILE, {**train_state, "iteration": iteration})
        shutil.rmtree(final, ignore_errors=True)
        partial.rename(final)
        for old in list_checkpoints(root)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
        log.info("checkpoint %s written", final)
    _barrier()
    return final


def load_checkpoint(path: Path, meta: nn.Module, optimizer, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """Load model and optimiser state (any world size); returns the train state."""
    path = Path(path)
    if not (path / STATE_FILE).is_file():
        raise CheckpointError(f"{path} is not a complete checkpoint (no {STATE_FILE})")
    state = _state(meta, optimizer, skip)
    try:
        dcp.load(state, checkpoint_id=str(path))
    except (Exception, CheckpointException) as err:  # DCP's error is a BaseException
        raise CheckpointError(f"{path} does not match this model/optimiser: {err}") from err
    set_state_dict(
        meta,
        optimizer,
        model_state_dict=state["model"],
        optim_state_dict=state["optim"],
        options=StateDictOptions(strict=not skip),
    )
    return read_json(path / STATE_FILE)


def load_ema_model(checkpoint_dir: str | Path) -> tuple[nn.ModuleDict, Any]:
    """The EMA model of a checkpoint (teacher, or the student's EMA after
    distillation): a frozen backbone + heads ModuleDict, and the run's TrainConfig.
    Works in one process or inside any process group."""
    from curation.train.config import validate_train_config
    from curation.train.meta_arch import build_student

    checkpoint_dir = Path(checkpoint_dir)
    if not (checkpoint_dir / STATE_FILE).is_file():
        raise CheckpointError(f"{checkpoint_dir} is not a complete trainer checkpoint (no {STATE_FILE})")
    cfg = validate_train_config(read_json(checkpoint_dir / STATE_FILE)["config"])
    parts = build_student(cfg, drop_path_rate=0.0)
    prefix = "student_ema." if cfg.distill.enabled else "teacher."
    state = {"model": {prefix + k: v for k, v in parts.state_dict().items()}}
    try:  # DCP fills the given tensors, which are the module's, in place
        dcp.load(state, checkpoint_id=str(checkpoint_dir), no_dist=not dist.is_initialized())
    except (Exception, CheckpointException) as err:  # DCP's error is a BaseException
        raise CheckpointError(f"cannot read the EMA model of {checkpoint_dir}: {err}") from err
    parts.requires_grad_(False)
    return parts.eval(), cfg


def remove_partial(root: Path) -> None:
    """Delete checkpoints left half-written by a killed run (rank 0 only)."""
    if root.is_dir():
        for p in root.glob("step-*.partial"):
            shutil.rmtree(p, ignore_errors=True)
