import numpy as np

from curation.train.data.masking import BlockMasking


def test_mask_sizes_within_target():
    masking = BlockMasking((14, 14))
    rng = np.random.default_rng(0)
    for target in [0, 4, 20, 50, 98]:
        for _ in range(20):
            mask = masking(target, rng)
            assert mask.shape == (14, 14) and mask.dtype == bool
            assert mask.sum() <= target
            if target:
                assert mask.sum() >= 0.6 * target


def test_blocks_are_rectangles_of_bounded_aspect():
    masking = BlockMasking((16, 16), min_patches=4)
    rng = np.random.default_rng(1)
    for _ in range(100):
        mask = np.zeros((16, 16), dtype=bool)
        added = masking._add_block(mask, 40, rng)
        rows, cols = np.nonzero(mask)
        h, w = np.ptp(rows) + 1, np.ptp(cols) + 1
        assert h * w == added == mask.sum()  # one filled rectangle
        assert added >= 3  # area >= 4 before rounding
        assert min(h, w) == 1 or 0.3 / 2 <= h / w <= 2 / 0.3  # aspect [0.3, 1/0.3] up to rounding


def test_block_cap_half_the_grid():
    assert BlockMasking((8, 8)).max_patches == 32
    masking = BlockMasking((8, 8), max_patches=6)
    rng = np.random.default_rng(2)
    sizes = []
    for _ in range(100):
        mask = np.zeros((8, 8), dtype=bool)
        added = masking._add_block(mask, masking.max_patches, rng)
        assert added == mask.sum() <= 6
        sizes.append(added)
    assert min(s for s in sizes if s) >= 3 and max(sizes) == 6


def test_deterministic_given_rng():
    masking = BlockMasking((10, 10))
    a = masking(30, np.random.default_rng(5))
    b = masking(30, np.random.default_rng(5))
    assert np.array_equal(a, b)
