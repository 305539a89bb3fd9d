"""Process group and FSDP2 sharding.

Every run, a single process included, has a process group (gloo on CPU, NCCL
on GPU) and FSDP2-sharded modules, so that there is one code path and one
checkpoint format. ``fully_shard`` wraps each transformer block, then each
backbone (the rest of its parameters) and each head, for the student and the
teacher (DINOv2 wraps the same six modules, with block chunks). Parameters
compute in bf16/fp16; the student heads reduce their gradients in fp32, as
DINOv2 does to avoid instabilities.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from typing import cast

import torch
import torch.distributed as dist
from torch import nn

log = logging.getLogger(__name__)

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


@dataclass(frozen=True)
class Distributed:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    owns_group: bool  # this module created the process group (and destroys it)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def pick_device(setting: str, local_rank: int) -> torch.device:
    if setting == "cuda" or (setting == "auto" and torch.cuda.is_available()):
        # A launcher that shows each process one GPU still numbers local ranks from 0.
        index = local_rank % max(torch.cuda.device_count(), 1)
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    return torch.device("cpu")


def init_distributed(device_setting: str = "auto") -> Distributed:
    """Join the job's process group: an existing one (Ray Train), torchrun's
    (RANK / WORLD_SIZE / LOCAL_RANK in the environment), or a one-process group."""
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_setting, local_rank)
    # On GPU, NCCL for CUDA tensors and gloo for the few CPU ones (reader states, counters).
    backend = "cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo"
    owns = not dist.is_initialized()
    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1 or "MASTER_ADDR" in os.environ
    if owns and launched:
        dist.init_process_group(backend=backend, device_id=device if device.type == "cuda" else None)
    elif owns:
        dist.init_process_group(backend=backend, store=dist.HashStore(), rank=0, world_size=1)
    return Distributed(dist.get_rank(), dist.get_world_size(), local_rank, device, owns)


def close_distributed(ctx: Distributed) -> None:
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def param_dtype(setting: str, device: torch.device) -> torch.dtype:
    if setting == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return DTYPES[setting]


def shard_model(
    parts: nn.ModuleDict,
    compute_dtype: torch.dtype,
    backbone_reduce: torch.dtype,
    head_reduce: torch.dtype = torch.float32,
    reshard_after_forward: bool = True,
) -> None:
    """``fully_shard`` each block, the backbone and each head of one ModuleDict, in place."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    backbone_policy = MixedPrecisionPolicy(param_dtype=compute_dtype, reduce_dtype=backbone_reduce)
    for block in cast(nn.ModuleList, parts["backbone"].blocks):  # nn.Module types attributes as Tensor | Module
        fully_shard(block, mp_policy=backbone_policy, reshard_after_forward=reshard_after_forward)
    fully_shard(parts["backbone"], mp_policy=backbone_policy)
    head_policy = MixedPrecisionPolicy(param_dtype=compute_dtype, reduce_dtype=head_reduce)
    for name, module in parts.items():
        if name != "backbone":
            fully_shard(module, mp_policy=head_policy)


def shard_meta_arch(meta: nn.Module, cfg, device: torch.device) -> None:
    """Move to ``device`` and shard every student/teacher ModuleDict of a meta-architecture."""
    # The ViT returns its feature dict as views of one normed tensor; the
    # meta-architecture never modifies them in place, which is what FSDP warns of.
    warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module .* returned a view tensor")
    meta.to(device)
    compute = param_dtype(cfg.fsdp.param_dtype, device)
    reduce = compute if cfg.fsdp.reduce_dtype == "param" else DTYPES[cfg.fsdp.reduce_dtype]
    for _name, parts in meta.named_children():
        if isinstance(parts, nn.ModuleDict):
            shard_model(parts, compute, reduce, reshard_after_forward=cfg.fsdp.reshard_after_forward)
    log.debug("sharded %s: compute %s, backbone reduce %s", type(meta).__name__, compute, reduce)


def compile_blocks(meta: nn.Module) -> None:
    """``torch.compile`` each transformer block in place, after sharding.

    Per-block compilation keeps FSDP2's per-block hooks outside the compiled
    graphs and parameter names unchanged (checkpoints stay compatible).
    Packed crop groups change the row count, so shapes are compiled dynamic.
    """
    for parts in meta.children():
        if isinstance(parts, nn.ModuleDict):
            for block in cast(nn.ModuleList, parts["backbone"].blocks):
                block.compile(dynamic=True)


def reshard(module: nn.Module) -> None:
    """Free the gathered parameters of every FSDP unit in ``module`` (a root
    stays unsharded after forward, expecting a backward that a teacher never runs)."""
    from torch.distributed.fsdp import FSDPModule

    for sub in module.modules():
        if isinstance(sub, FSDPModule):
            sub.reshard()


def clip_grad_norms(parts: nn.ModuleDict, max_norm: float) -> dict[str, float]:
    """Clip each module's gradient norm separately (DINOv2 clips backbone and heads
    apart); returns the norms before clipping."""
    norms = {}
    for name, module in parts.items():
        params = [p for p in module.parameters() if p.grad is not None]
        if params:
            norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
            norm = norm.full_tensor() if hasattr(norm, "full_tensor") else norm
            norms[name] = float(norm)
    return norms
