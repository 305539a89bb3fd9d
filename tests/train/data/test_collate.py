import numpy as np
import torch

from curation.train.data.collate import Collate, stratified_mask_counts


def test_stratified_counts():
    rng = np.random.default_rng(0)
    counts = stratified_mask_counts(8, 100, 0.5, (0.1, 0.5), rng)
    masked = np.sort(counts[counts > 0])
    assert len(masked) == 4 and (counts == 0).sum() == 4
    # one ratio in each bin of linspace(0.1, 0.5, 5): [0.1,0.2), [0.2,0.3), ...
    for i, n in enumerate(masked):
        assert 100 * (0.1 + 0.1 * i) - 1 <= n <= 100 * (0.2 + 0.1 * i)


def _sample(i, g=16, loc=8, n_local=3):
    return {
        "global": [torch.full((3, g, g), 10 * i + c, dtype=torch.uint8) for c in range(2)],
        "local": [torch.full((3, loc, loc), 10 * i + 2 + c, dtype=torch.uint8) for c in range(n_local)],
        "state": torch.tensor([0, 0, i + 1, 0, 0]),
        "key": f"k{i}",
    }


def test_collate_layout_and_masks():
    collate = Collate(grid=(4, 4), mask_probability=0.5, ratio_range=(0.1, 0.5), seed=0)
    batch = collate([_sample(i) for i in range(4)])
    assert batch["global_crops"].shape == (8, 3, 16, 16)
    assert batch["local_crops"].shape == (12, 3, 8, 8)
    # crop-major: global crop 0 of samples 0..3, then crop 1 of samples 0..3
    assert batch["global_crops"][:, 0, 0, 0].tolist() == [0, 10, 20, 30, 1, 11, 21, 31]
    assert batch["local_crops"][:, 0, 0, 0].tolist()[:5] == [2, 12, 22, 32, 3]
    masks = batch["masks"]
    assert masks.shape == (8, 16) and masks.dtype == torch.bool
    assert (masks.sum(1) > 0).sum() <= 4
    assert batch["state"][:, 2].tolist() == [1, 2, 3, 4]
    again = collate([_sample(i) for i in range(4)])
    assert torch.equal(again["masks"], masks)  # seeded by the stream position
