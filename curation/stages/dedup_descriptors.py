"""The dedup stage's descriptor model and the descriptors of the pool's survivors.

Shared by the features step (:mod:`curation.stages.dedup`) and the copy
pass (:mod:`curation.stages.dedup_copy`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from curation.algorithms.knn import unit_rows
from curation.preprocess import PreprocessSpec
from curation.stages.dedup_config import DedupConfig

# Side files of the features step, per partition.
THUMBS, SOURCES, DESCRIPTORS = "thumbs.npy", "sources.npy", "desc.npy"


def load_descriptor_model(cfg: DedupConfig, seed: int):
    """``(descriptor model, feature spec, weights source)`` of the configured descriptor.

    The model decodes on two threads per CPU of ``descriptor.num_cpus``.
    Without copy or relative dedup there is no model (``None``, ``"none"``)
    and images decode straight to the hash's sizes.
    """
    from curation.models import sscd
    from curation.models.inference import decode_thread_count

    d, h = cfg.descriptor, cfg.hashing
    v = h.variants
    source_size = v.source_size if v.enabled else 0
    # Borders are found, and everything area-averaged down, from 4x the variant source (256 px).
    mode, size = ("square", 4 * max(h.thumb_size, source_size)) if not cfg.describes else (d.resize, d.image_size)
    spec = sscd.FeatureSpec(PreprocessSpec(size, mode=mode, interpolation="bilinear", draft=d.draft), h.thumb_size,
                            h.method == "phash", source_size, v.enabled and v.trim)
    if not cfg.describes:
        return None, spec, "none"
    model, source = sscd.load(d.weights, d.backbone, d.dims, d.gem_p, seed=seed, image_size=d.image_size)
    threads = decode_thread_count(0, d.num_cpus)
    return sscd.DescriptorModel(model, d.device, d.batch_size, d.dims, threads), spec, source


def pool_descriptors(pool: Any, nodes: np.ndarray, center: bool, path: Path, mean: np.ndarray | None = None):
    """Unit descriptors of ``nodes`` in a memory-mapped ``.npy`` ``(len(nodes), d)`` float16, and the
    mean (computed over ``nodes`` unless given)."""
    first = np.load(pool._file(pool.parts[0], DESCRIPTORS), mmap_mode="r") if pool.parts else None
    dims = first.shape[1] if first is not None else 0
    if center and len(nodes) and mean is None:
        total = sum(chunk.astype(np.float64).sum(axis=0) for chunk in pool.arrays(DESCRIPTORS, nodes))
        mean = (total / len(nodes)).astype(np.float32)
    x = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(len(nodes), dims))
    start = 0
    for chunk in pool.arrays(DESCRIPTORS, nodes):
        x[start : start + len(chunk)] = unit_rows(chunk, mean)
        start += len(chunk)
    x.flush()
    return x, mean
