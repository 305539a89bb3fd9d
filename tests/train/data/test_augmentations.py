import numpy as np
import pytest
import torch
from PIL import Image

from curation.train.data.augmentations import (
    MultiCrop,
    color_jitter,
    normalize,
    random_resized_crop_box,
    resolve_blur,
)


@pytest.fixture(scope="module")
def image():
    from skimage import data

    return Image.fromarray(data.astronaut()).resize((128, 96))


def test_crop_box_within_image_and_scale():
    rng = np.random.default_rng(0)
    for _ in range(200):
        top, left, h, w = random_resized_crop_box(128, 96, (0.05, 0.32), rng)
        assert 0 <= top and top + h <= 96 and 0 <= left and left + w <= 128
        assert 0.04 <= h * w / (128 * 96) <= 0.33


def test_multicrop_shapes_and_determinism(image):
    aug = MultiCrop(global_size=32, local_size=16, num_local=3)
    out = aug(image, np.random.default_rng(3))
    assert [t.shape for t in out["global"]] == [(3, 32, 32)] * 2
    assert [t.shape for t in out["local"]] == [(3, 16, 16)] * 3
    assert out["global"][0].dtype == torch.uint8
    again = aug(image, np.random.default_rng(3))
    assert all(torch.equal(a, b) for a, b in zip(out["local"], again["local"], strict=False))
    other = aug(image, np.random.default_rng(4))
    assert not torch.equal(out["global"][0], other["global"][0])


def test_blur_probabilities():
    assert resolve_blur("intended") == (1.0, 0.1, 0.5)
    assert resolve_blur("official") == (0.0, 0.9, 0.5)
    assert resolve_blur([0.2, 0.3, 0.4]) == (0.2, 0.3, 0.4)


def test_blur_always_vs_never_on_first_global(image):
    # Same RNG stream: blur p=1 smooths the first crop, p=0 leaves it sharp.
    sharp = MultiCrop(64, 16, 0, blur_probabilities=(0.0, 0.0, 0.0))(image, np.random.default_rng(9))
    blurred = MultiCrop(64, 16, 0, blur_probabilities=(1.0, 0.0, 0.0))(image, np.random.default_rng(9))

    def roughness(t):
        x = t.float()
        return (x[:, 1:] - x[:, :-1]).abs().mean().item()

    assert roughness(blurred["global"][0]) < roughness(sharp["global"][0])


def test_color_jitter_keeps_size(image):
    out = color_jitter(image, np.random.default_rng(0))
    assert out.size == image.size and out.mode == "RGB"


def test_normalize():
    crops = torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)
    out = normalize(crops)
    expected = (1.0 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    assert torch.allclose(out[0, :, 0, 0], expected)
