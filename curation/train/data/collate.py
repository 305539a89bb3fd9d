"""Collation of multi-crop samples into a training batch, with iBOT masks.

Crops are stacked crop-major, ``[crop 0 of every image, crop 1 of every
image, ...]``, so ``chunk(num_crops)`` recovers the crop groups. A fraction
``mask_probability`` of the global-crop images is masked, with mask ratios
stratified over [ratio_min, ratio_max]: one ratio drawn in each of the equal
bins of ``linspace`` (``data/collate.py``), then shuffled over the images.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from curation.train.data.masking import BlockMasking


def stratified_mask_counts(
    num_images: int, num_patches: int, probability: float, ratio_range: tuple[float, float], rng: np.random.Generator
) -> np.ndarray:
    """Patches to mask per image [num_images] (int), zero for the unmasked ones."""
    num_masked = int(num_images * probability)
    edges = np.linspace(ratio_range[0], ratio_range[1], num_masked + 1)
    ratios = rng.uniform(edges[:-1], edges[1:])
    counts = np.zeros(num_images, dtype=np.int64)
    counts[:num_masked] = (num_patches * ratios).astype(np.int64)
    return rng.permutation(counts)


class Collate:
    """Callable for ``DataLoader(collate_fn=...)``.

    Each sample: ``{"global": [uint8 [3, G, G]] * n_g, "local": [uint8 [3, L, L]] * n_l,
    "state": int64 [STATE_FIELDS], "key": str}``. The batch: ``global_crops`` uint8 [n_g*B, 3, G, G],
    ``local_crops`` uint8 [n_l*B, 3, L, L], ``masks`` bool [n_g*B, N] and ``state``
    int64 [B, STATE_FIELDS] (reader position of each sample), ``keys``. The mask RNG is
    seeded from the first sample's state, so a replayed stream gets the same masks.
    """

    def __init__(
        self,
        grid: tuple[int, int],
        mask_probability: float = 0.5,
        ratio_range: tuple[float, float] = (0.1, 0.5),
        min_patches: int = 4,
        min_aspect: float = 0.3,
        seed: int = 0,
    ):
        self.masking = BlockMasking(grid, min_patches=min_patches, min_aspect=min_aspect)
        self.num_patches = grid[0] * grid[1]
        self.mask_probability = mask_probability
        self.ratio_range = ratio_range
        self.seed = seed

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        state = torch.stack([s["state"] for s in samples])
        global_crops = _crop_major(samples, "global")
        local_crops = _crop_major(samples, "local")
        rng = np.random.default_rng([self.seed, 7, *state[0].tolist()])
        counts = stratified_mask_counts(
            len(global_crops), self.num_patches, self.mask_probability, self.ratio_range, rng
        )
        masks = np.stack([self.masking(int(n), rng).reshape(-1) for n in counts])
        return {
            "global_crops": global_crops,
            "local_crops": local_crops,
            "masks": torch.from_numpy(masks),
            "state": state,
            "keys": [s["key"] for s in samples],
        }


def _crop_major(samples: list[dict[str, Any]], kind: str) -> torch.Tensor:
    """[n crops * B, ...]: crop 0 of every sample, then crop 1, ..."""
    return torch.stack([s[kind][i] for i in range(len(samples[0][kind])) for s in samples])
