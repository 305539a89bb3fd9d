"""Training metrics: log lines and ``<output_dir>/metrics.jsonl`` (rank 0).

Loss terms are averaged over the ranks and over the iterations since the
last line; throughput counts images of all ranks; memory is the peak GPU
memory allocated (GPU) or the peak resident set size (CPU).
"""

from __future__ import annotations

import json
import logging
import resource
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

log = logging.getLogger("curation.train")


def peak_memory_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


class MetricsLog:
    def __init__(self, output_dir: Path, global_batch: int, is_main: bool, device: torch.device):
        self.path = output_dir / "metrics.jsonl"
        self.global_batch, self.is_main, self.device = global_batch, is_main, device
        self.sums: dict[str, float] = {}
        self.count = 0
        self.started = time.perf_counter()
        if is_main:
            output_dir.mkdir(parents=True, exist_ok=True)

    def step(
        self,
        iteration: int,
        losses: dict[str, float],
        schedule: dict[str, float],
        grad_norms: dict[str, float],
        counters: dict[str, int],
        log_now: bool,
    ) -> None:
        """Accumulate one iteration; on ``log_now`` (same on every rank) reduce and write."""
        for name, value in losses.items():
            self.sums[name] = self.sums.get(name, 0.0) + value
        self.count += 1
        if not log_now:
            return
        names = sorted(self.sums)
        means = [self.sums[n] / self.count for n in names] + list(counters.values())
        values = torch.tensor(means, dtype=torch.float64, device=self.device)
        if dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(values)
            values[: len(names)] /= dist.get_world_size()
        values = values.cpu()
        elapsed = time.perf_counter() - self.started
        record = {
            "iteration": iteration,
            **{n: round(float(v), 6) for n, v in zip(names, values, strict=False)},
            **{k: int(v) for k, v in zip(counters, values[len(names) :].tolist(), strict=False)},
            **{k: float(f"{v:.6g}") for k, v in schedule.items()},
            **{f"grad_norm_{k}": round(v, 4) for k, v in grad_norms.items()},
            "images_per_s": round(self.count * self.global_batch / elapsed, 2),
            "memory_gib": round(peak_memory_gib(self.device), 3),
        }
        self.record(iteration, record)
        if self.is_main:
            log.info(
                "it %d | loss %.4f (dino %.4f ibot %.4f koleo %.4f) | lr %.3g wd %.3g mom %.5f T %.4f | "
                "%.1f img/s | %.2f GiB | corrupt %d bad shards %d",
                iteration,
                record["total"],
                record["dino"],
                record["ibot"],
                record["koleo"],
                record["lr"],
                record["weight_decay"],
                record["momentum"],
                record["teacher_temp"],
                record["images_per_s"],
                record["memory_gib"],
                record["corrupt"],
                record["bad_shards"],
            )
        self.sums, self.count, self.started = {}, 0, time.perf_counter()

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Time spent inside does not count in the throughput."""
        began = time.perf_counter()
        try:
            yield
        finally:
            self.started += time.perf_counter() - began

    def record(self, iteration: int, values: dict[str, Any]) -> None:
        """Append one JSON line (rank 0)."""
        if self.is_main:
            with open(self.path, "a") as f:
                f.write(json.dumps({"iteration": iteration, **values}) + "\n")
