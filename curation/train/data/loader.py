"""The training DataLoader of one rank, and the record of where its readers are.

A :class:`StreamTracker` keeps, for each reader of this rank, the state
carried by the last batch the loop consumed (batches prefetched but not yet
used do not count). Checkpoints store the gathered states; a resumed run with
the same number of ranks and workers continues each reader exactly, any
other layout starts every reader on a fresh epoch.
"""

from __future__ import annotations

import logging

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from curation.manifest import Manifest
from curation.train.data.augmentations import MultiCrop, resolve_blur
from curation.train.data.collate import Collate
from curation.train.data.manifest_dataset import STATE_FIELDS, ManifestDataset, ReaderState

log = logging.getLogger(__name__)


def build_loader(
    cfg,
    manifest: Manifest,
    rank: int,
    world_size: int,
    global_size: int,
    local_size: int,
    start: dict[int, ReaderState],
    mask_probability: float | None = None,
) -> DataLoader:
    """Batches of ``cfg.optim.batch_size`` images for one rank (see ``Collate``)."""
    crops = MultiCrop(
        global_size=global_size,
        local_size=local_size,
        num_local=cfg.crops.num_local,
        global_scale=tuple(cfg.crops.global_scale),
        local_scale=tuple(cfg.crops.local_scale),
        blur_probabilities=resolve_blur(cfg.crops.blur_probabilities),
        solarize_probability=cfg.crops.solarize_probability,
    )
    dataset = ManifestDataset(
        manifest,
        crops,
        rank=rank,
        world_size=world_size,
        seed=cfg.seed,
        shuffle_buffer=cfg.data.shuffle_buffer,
        on_bad_shard=cfg.data.on_bad_shard,
        verify_checksums=cfg.data.verify_checksums,
        start=start,
    )
    grid = global_size // cfg.vit.patch_size
    collate = Collate(
        (grid, grid),
        mask_probability=cfg.masking.probability if mask_probability is None else mask_probability,
        ratio_range=(cfg.masking.ratio_min, cfg.masking.ratio_max),
        min_patches=cfg.masking.min_patches,
        min_aspect=cfg.masking.min_aspect,
        seed=cfg.seed,
    )
    workers = cfg.data.num_workers
    return DataLoader(
        dataset,
        batch_size=cfg.optim.batch_size,
        collate_fn=collate,
        num_workers=workers,
        prefetch_factor=cfg.data.prefetch_factor if workers else None,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=False,
    )


class StreamTracker:
    """Reader states of this rank, updated from each consumed batch's ``state``."""

    def __init__(self, rank: int, readers_per_rank: int, start: dict[int, ReaderState]):
        first = rank * readers_per_rank
        self.readers_per_rank = readers_per_rank
        self.states = {r: start.get(r, ReaderState()) for r in range(first, first + readers_per_rank)}

    def update(self, state: torch.Tensor) -> None:
        """state: int64 [B, len(STATE_FIELDS)] of one batch (one reader per batch)."""
        for row in state.tolist():
            reader, epoch, position, corrupt, bad = row
            self.states[reader] = ReaderState(epoch, position, corrupt, bad)

    def local_tensor(self) -> torch.Tensor:
        """int64 [readers_per_rank, len(STATE_FIELDS)] in reader order."""
        return torch.stack([s.vector(r) for r, s in sorted(self.states.items())])

    def gather(self, device: torch.device | str = "cpu") -> list[list[int]]:
        """Every reader's state, all ranks (collective: every rank must call it;
        ``device``: where the backend wants tensors, e.g. CUDA for NCCL)."""
        local = self.local_tensor().to(device)
        if dist.is_initialized() and dist.get_world_size() > 1:
            parts = [torch.empty_like(local) for _ in range(dist.get_world_size())]
            dist.all_gather(parts, local)
            local = torch.cat(parts)
        return local.tolist()

    def counters(self) -> dict[str, int]:
        """Corrupt samples and bad shards of this rank's readers."""
        states = self.states.values()
        return {"corrupt": sum(s.corrupt for s in states), "bad_shards": sum(s.bad_shards for s in states)}


def resume_states(saved: list[list[int]], world_size: int, readers_per_rank: int) -> dict[int, ReaderState]:
    """Start states for this run from a checkpoint's gathered reader states."""
    if not saved:
        return {}
    counters = {f: sum(row[STATE_FIELDS.index(f)] for row in saved) for f in ("corrupt", "bad_shards")}
    if len(saved) == world_size * readers_per_rank:
        return {row[0]: ReaderState(*row[1:]) for row in saved}
    epoch = max(row[1] for row in saved) + 1
    log.warning(
        "data layout changed (%d readers saved, %d now): every reader starts epoch %d afresh",
        len(saved),
        world_size * readers_per_rank,
        epoch,
    )
    # Counters are carried by reader 0 so totals stay right.
    return {0: ReaderState(epoch, 0, counters["corrupt"], counters["bad_shards"])} | {
        r: ReaderState(epoch) for r in range(1, world_size * readers_per_rank)
    }
