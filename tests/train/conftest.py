"""Package-scoped fixtures of the trainer tests (torn down after tests/train)."""

import numpy as np
import pytest
from PIL import Image

from tests.train.helpers import run_config
from tests.train.shards import build_shards


@pytest.fixture(scope="package")
def shards_dir(tmp_path_factory):
    """6 shards x 8 samples of 48 px photos; two corrupt samples in shard 1."""
    root = tmp_path_factory.mktemp("shards")
    build_shards(root, num_shards=6, per_shard=8, corrupt=("s1-2", "s1-5"))
    return root


@pytest.fixture(scope="package", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread, and far faster on a busy machine
    where a second thread's spin-waits compete with other processes."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="package")
def knn_folder(tmp_path_factory):
    """Two classes of noisy images (reddish, bluish): train 4 + val 2 each."""
    root = tmp_path_factory.mktemp("knn")
    rng = np.random.default_rng(0)
    for split, count in (("train", 4), ("val", 2)):
        for label, channel in (("red", 0), ("blue", 2)):
            (root / split / label).mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 80, (40, 40, 3), dtype=np.uint8)
                pixels[..., channel] += 170
                Image.fromarray(pixels).save(root / split / label / f"{i}.png")
    return root


@pytest.fixture(scope="package")
def long_run(shards_dir, knn_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("long")
    from curation.train.loop import train

    cfg = run_config(
        shards_dir,
        out,
        optim={"iterations": 24},
        checkpoint={"every": 8, "keep": 2},
        log_every=1,
        knn={"path": str(knn_folder), "image_size": 32, "k": 3},
    )
    return out, train(cfg)
