"""Block-wise masking of the patch grid (BEiT, iBOT; ``data/masking.py``).

Rectangles of random area (at least ``min_patches``, at most ``max_patches``
per block) and random aspect ratio (log-uniform in [min_aspect, 1/min_aspect])
are added until the target number of patches is masked; a block is kept only
if it adds between 1 and the remaining budget of new patches, so a mask never
exceeds its target.
"""

from __future__ import annotations

import math

import numpy as np


class BlockMasking:
    """``BlockMasking((h, w))(num_masked, rng)`` -> bool mask [h, w]."""

    def __init__(
        self,
        grid: tuple[int, int],
        min_patches: int = 4,
        max_patches: int | None = None,
        min_aspect: float = 0.3,
        max_aspect: float | None = None,
        attempts: int = 10,
    ):
        self.height, self.width = grid
        self.num_patches = self.height * self.width
        self.min_patches = min_patches
        self.max_patches = max_patches if max_patches is not None else int(0.5 * self.num_patches)
        max_aspect = max_aspect if max_aspect is not None else 1.0 / min_aspect
        self.log_aspect = (math.log(min_aspect), math.log(max_aspect))
        self.attempts = attempts

    def _add_block(self, mask: np.ndarray, budget: int, rng: np.random.Generator) -> int:
        """Try to mask one rectangle adding at most ``budget`` patches; returns how many."""
        for _ in range(self.attempts):
            # Near the target the budget drops below min_patches; the range
            # is then [budget, min_patches], as Python's uniform(a, b) with a > b.
            area = rng.uniform(min(self.min_patches, budget), max(self.min_patches, budget))
            aspect = math.exp(rng.uniform(*self.log_aspect))
            h = int(round(math.sqrt(area * aspect)))
            w = int(round(math.sqrt(area / aspect)))
            if not (0 < h < self.height and 0 < w < self.width):
                continue
            top = int(rng.integers(0, self.height - h + 1))
            left = int(rng.integers(0, self.width - w + 1))
            block = mask[top : top + h, left : left + w]
            added = h * w - int(block.sum())
            if 0 < added <= budget:
                block[...] = True
                return added
        return 0

    def __call__(self, num_masked: int, rng: np.random.Generator) -> np.ndarray:
        mask = np.zeros((self.height, self.width), dtype=bool)
        count = 0
        while count < num_masked:
            budget = min(num_masked - count, self.max_patches)
            added = self._add_block(mask, budget, rng)
            if added == 0:
                break
            count += added
        return mask
