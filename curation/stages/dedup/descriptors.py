"""The dedup stage's descriptor model and the names of its side files.

Shared by the features step (:mod:`curation.stages.dedup.stage`) and the copy
pass (:mod:`curation.stages.dedup.copy`, benchmark descriptors).
"""

from __future__ import annotations

from curation.preprocess import PreprocessSpec
from curation.stages.dedup.config import DedupConfig

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
    spec = sscd.FeatureSpec(
        PreprocessSpec(size, mode=mode, interpolation="bilinear", draft=d.draft),
        h.thumb_size,
        h.method == "phash",
        source_size,
        v.enabled and v.trim,
    )
    if not cfg.describes:
        return None, spec, "none"
    model, source = sscd.load(d.weights, d.backbone, d.dims, d.gem_p, seed=seed, image_size=d.image_size)
    threads = decode_thread_count(0, d.num_cpus)
    return sscd.DescriptorModel(model, d.device, d.batch_size, d.dims, threads), spec, source
