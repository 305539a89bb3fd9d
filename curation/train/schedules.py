"""Per-iteration schedules, precomputed as arrays (``utils/utils.py:CosineScheduler``).

Every schedule is ``freeze`` zeros, a linear warmup, then a half cosine from the
base to the final value; indices past the end return the final value. A run
with a high-resolution phase appends a second set of schedules of the same
shapes, every length scaled to the phase (the paper's "schedules compressed to
fit"), with the learning rates scaled down.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import numpy as np


def cosine_schedule(
    base: float,
    final: float,
    total: int,
    warmup: int = 0,
    warmup_start: float = 0.0,
    freeze: int = 0,
) -> np.ndarray:
    """float64 array [total]: ``freeze`` zeros, ``warmup`` steps linear from
    ``warmup_start`` to ``base`` (endpoint included), then cosine to ``final``."""
    freeze, warmup = min(freeze, total), min(warmup, max(total - freeze, 0))
    rest = total - freeze - warmup
    steps = np.arange(rest)
    cosine = final + 0.5 * (base - final) * (1.0 + np.cos(np.pi * steps / max(rest, 1)))
    return np.concatenate([np.zeros(freeze), np.linspace(warmup_start, base, warmup), cosine])


def sqrt_scaled_lr(base_lr: float, global_batch: int, reference_batch: int = 1024) -> float:
    """DINOv2's ``sqrt_wrt_1024`` rule: lr = base_lr * sqrt(batch / 1024)."""
    return base_lr * math.sqrt(global_batch / reference_batch)


@dataclass(frozen=True)
class ScheduleSpec:
    """Inputs of one phase's schedules (lengths in iterations)."""

    iterations: int
    lr: float  # already batch-scaled
    min_lr: float
    warmup: int
    weight_decay: float
    weight_decay_end: float
    momentum: float
    momentum_end: float
    teacher_temp: float
    teacher_temp_start: float
    teacher_temp_warmup: int
    freeze_last_layer: int

    def compressed(self, iterations: int, lr_scale: float) -> ScheduleSpec:
        """The same shapes squeezed into ``iterations``, learning rates x lr_scale."""
        ratio = iterations / max(self.iterations, 1)

        def squeeze(n: int) -> int:
            return int(round(n * ratio))

        return replace(
            self,
            iterations=iterations,
            lr=self.lr * lr_scale,
            min_lr=self.min_lr * lr_scale,
            warmup=squeeze(self.warmup),
            teacher_temp_warmup=squeeze(self.teacher_temp_warmup),
            freeze_last_layer=squeeze(self.freeze_last_layer),
        )


@dataclass(frozen=True)
class Schedules:
    """One value per iteration of each schedule (arrays of equal length)."""

    lr: np.ndarray
    last_layer_lr: np.ndarray
    weight_decay: np.ndarray
    momentum: np.ndarray
    teacher_temp: np.ndarray

    def __len__(self) -> int:
        return len(self.lr)

    def at(self, iteration: int) -> dict[str, float]:
        """The values at an iteration (the last values past the end)."""
        i = min(iteration, len(self) - 1)
        return {f.name: float(getattr(self, f.name)[i]) for f in fields(self)}

    def __add__(self, other: Schedules) -> Schedules:
        return Schedules(
            **{f.name: np.concatenate([getattr(self, f.name), getattr(other, f.name)]) for f in fields(self)}
        )


def build_schedules(spec: ScheduleSpec) -> Schedules:
    n = spec.iterations
    temp = cosine_schedule(
        spec.teacher_temp,
        spec.teacher_temp,
        spec.teacher_temp_warmup,
        warmup=spec.teacher_temp_warmup,
        warmup_start=spec.teacher_temp_start,
    )
    temp = np.concatenate([temp, np.full(max(n - len(temp), 0), spec.teacher_temp)])[:n]
    return Schedules(
        lr=cosine_schedule(spec.lr, spec.min_lr, n, warmup=spec.warmup),
        last_layer_lr=cosine_schedule(spec.lr, spec.min_lr, n, warmup=spec.warmup, freeze=spec.freeze_last_layer),
        weight_decay=cosine_schedule(spec.weight_decay, spec.weight_decay_end, n),
        momentum=cosine_schedule(spec.momentum, spec.momentum_end, n),
        teacher_temp=temp,
    )


def build_run_schedules(spec: ScheduleSpec, highres_iterations: int = 0, highres_lr_scale: float = 1.0) -> Schedules:
    """Schedules of a whole run: ``spec.iterations`` main iterations, then the
    high-resolution phase (if any) with compressed schedules."""
    main = build_schedules(spec)
    if highres_iterations <= 0:
        return main
    return main + build_schedules(spec.compressed(highres_iterations, highres_lr_scale))
