import math

import pytest
import torch

from curation.errors import ConfigError
from curation.models.vit import build_vit
from curation.train.knn_eval import accuracy, evaluate_folder, knn_classify, labelled_images, load_eval_image


def test_knn_hand_computed():
    train = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    labels = torch.tensor([0, 1, 1])
    test = torch.tensor([[2.0, 0.0]])
    scores = knn_classify(train, labels, test, num_classes=2, k=2, temperature=0.5)
    # nearest two: train 0 (cos 1) -> class 0, train 2 (cos 1/sqrt2) -> class 1
    expected = torch.tensor([[math.exp(1 / 0.5), math.exp(2**-0.5 / 0.5)]])
    torch.testing.assert_close(scores, expected)
    scores = knn_classify(train, labels, test, num_classes=2, k=20, temperature=0.5)  # k capped at N
    assert scores[0, 1] == pytest.approx(math.exp(0) + math.exp(2**-0.5 / 0.5))


def test_accuracy():
    scores = torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.1, 0.4]])
    assert accuracy(scores, torch.tensor([1, 2]), 1) == 0.5
    assert accuracy(scores, torch.tensor([1, 2]), 2) == 1.0


def test_eval_image_size(knn_folder):
    image = load_eval_image(next((knn_folder / "val" / "red").iterdir()), 32)
    assert image.shape == (3, 32, 32) and image.dtype == torch.uint8


def test_folder_evaluation(knn_folder):
    torch.manual_seed(0)
    vit = build_vit("vit_small", embed_dim=32, depth=1, num_heads=2, patch_size=8, img_size=32)
    result = evaluate_folder(vit, knn_folder, image_size=32, k=3, batch_size=3)
    assert result["knn_top1"] == 1.0  # colour separates the classes even for random features
    paths, labels, classes = labelled_images(knn_folder / "train")
    assert classes == ["blue", "red"] and labels == [0] * 4 + [1] * 4 and len(paths) == 8
    with pytest.raises(ConfigError):
        labelled_images(knn_folder / "missing")
