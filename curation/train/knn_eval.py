"""k-NN classification of frozen features (DINO paper, Wu et al. 2018).

Features are L2-normalised; each test image's k nearest training images (cosine
similarity s) vote for their class with weight exp(s / T); defaults k=20,
T=0.07. The labelled folder has ``train/<class>/*`` and ``val/<class>/*``
(ImageNet layout). Under several ranks each extracts features of a slice of
the images and the slices are gathered, so every rank calls the same number
of forward passes (FSDP needs that).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from curation.errors import ConfigError
from curation.train.data.augmentations import normalize

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


def knn_classify(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
    chunk: int = 1024,
) -> torch.Tensor:
    """Class scores [M, C] of test features [M, D] from training features [N, D]
    with integer labels [N]: sum over the k nearest of exp(cosine / T)."""
    train = F.normalize(train_features.float(), dim=1)
    test = F.normalize(test_features.float(), dim=1)
    k = min(k, len(train))
    scores = []
    for start in range(0, len(test), chunk):
        similarity, index = (test[start : start + chunk] @ train.t()).topk(k, dim=1)
        votes = torch.zeros(len(similarity), num_classes, device=similarity.device)
        votes.scatter_add_(1, train_labels.to(similarity.device)[index], (similarity / temperature).exp())
        scores.append(votes)
    return torch.cat(scores)


def accuracy(scores: torch.Tensor, labels: torch.Tensor, top: int) -> float:
    """Fraction of rows whose label is among the ``top`` highest scores."""
    best = scores.topk(min(top, scores.shape[1]), dim=1).indices
    return float((best == labels[:, None]).any(dim=1).float().mean())


def labelled_images(root: Path, classes: list[str] | None = None) -> tuple[list[Path], list[int], list[str]]:
    """(image paths, label ids, class names) of ``root/<class>/*``."""
    if not root.is_dir():
        raise ConfigError(f"knn.path: {root} does not exist")
    classes = classes or sorted(p.name for p in root.iterdir() if p.is_dir())
    paths, labels = [], []
    for label, name in enumerate(classes):
        for p in sorted((root / name).glob("*")) if (root / name).is_dir() else []:
            if p.suffix.lower() in IMAGE_SUFFIXES:
                paths.append(p)
                labels.append(label)
    if not paths:
        raise ConfigError(f"knn.path: no images under {root}/<class>/")
    return paths, labels, classes


def load_eval_image(path: Path, size: int) -> torch.Tensor:
    """Resize the short side to size * 256/224 (bicubic), centre-crop size: uint8 [3, size, size]."""
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("RGB")
        short = round(size * 256 / 224)
        scale = short / min(image.size)
        width, height = max(short, round(image.width * scale)), max(short, round(image.height * scale))
        image = image.resize((width, height), Image.Resampling.BICUBIC)
        left, top = (image.width - size) // 2, (image.height - size) // 2
        image = image.crop((left, top, left + size, top + size))
        return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)


@torch.no_grad()
def extract_features(backbone: nn.Module, paths: list[Path], size: int, batch_size: int, device) -> torch.Tensor:
    """Normalised-CLS features [len(paths), D], this rank's slice gathered from all ranks."""
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    per_rank = math.ceil(len(paths) / world)
    mine = paths[rank * per_rank : (rank + 1) * per_rank]
    mine = mine + [paths[0]] * (per_rank - len(mine))  # equal forward count on every rank
    was_training = backbone.training
    backbone.eval()
    features = []
    for start in range(0, per_rank, batch_size):
        images = torch.stack([load_eval_image(p, size) for p in mine[start : start + batch_size]])
        features.append(backbone(normalize(images.to(device))).float())
    backbone.train(was_training)
    local = torch.cat(features)
    if world > 1:
        parts = [torch.empty_like(local) for _ in range(world)]
        dist.all_gather(parts, local)
        local = torch.cat(parts)
    return local[: len(paths)]


def evaluate_folder(
    backbone: nn.Module,
    root: str | Path,
    image_size: int = 224,
    k: int = 20,
    temperature: float = 0.07,
    batch_size: int = 64,
    device="cpu",
) -> dict[str, float]:
    """k-NN top-1 / top-5 accuracy (in [0, 1]) of ``root/val`` against ``root/train``."""
    root = Path(root)
    train_paths, train_labels, classes = labelled_images(root / "train")
    val_paths, val_labels, _ = labelled_images(root / "val", classes)
    train = extract_features(backbone, train_paths, image_size, batch_size, device)
    val = extract_features(backbone, val_paths, image_size, batch_size, device)
    scores = knn_classify(train, torch.tensor(train_labels), val, len(classes), k, temperature)
    labels = torch.tensor(val_labels, device=scores.device)
    return {"knn_top1": accuracy(scores, labels, 1), "knn_top5": accuracy(scores, labels, 5)}


def run_knn(cfg, backbone: nn.Module, device) -> dict[str, float]:
    knn = cfg.knn
    return evaluate_folder(backbone, knn.path, knn.image_size, knn.k, knn.temperature, knn.batch_size, device)
