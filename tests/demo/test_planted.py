"""The planted copy-detection corpus and its scoring."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from curation.demo import planted


def test_corpus_has_every_transform_and_tiles_as_hard_negatives():
    photos = {"a": Image.new("RGB", (300, 240), (10, 200, 30)), "b": Image.new("RGB", (240, 300), (200, 10, 30))}
    corpus = planted.build(copies_per_original=2, seed=1, photos=photos)
    n = 2 * planted.GRID**2
    assert len(corpus.names) == 3 * n and len(set(corpus.names)) == 3 * n
    assert corpus.transform[:n] == ["original"] * n and corpus.group[:n] == list(range(n))
    assert set(corpus.transform[n:]) == set(planted.TRANSFORMS)
    assert sorted(corpus.group[n:]) == sorted(list(range(n)) * 2)
    for data in corpus.data[:3]:
        assert Image.open(io.BytesIO(data)).format == "JPEG"
    assert planted.build(2, 1, photos).data == corpus.data  # deterministic


def test_score_counts_wrong_drops_and_found_copies():
    group = np.array([0, 1, 2, 0, 1, 2])
    transform = ["original"] * 3 + ["mirror", "crop_20", "mirror"]
    kept = np.array([0, 1, 1, 0, 4, 5])  # image 2 dropped for image 1: wrong; copy 3 found; 4 and 5 not
    s = planted.score(group, kept, transform)
    assert s["dropped"] == 2 and s["wrong_drops"] == 1 and s["precision"] == 0.5
    assert s["per_transform"] == {"crop_20": 0.0, "mirror": 0.5}
    assert s["recall"] == 1 / 3 and s["distinct_lost"] == 0
    s = planted.score(group, np.array([0, 0, 2, 0, 0, 2]), transform)  # group 1 lost both members
    assert s["distinct_lost"] == 1 and s["per_transform"]["crop_20"] == 1.0
