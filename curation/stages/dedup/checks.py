"""The dedup section's checks before any work (and before Ray starts): each error names its key."""

from __future__ import annotations

import logging
from pathlib import Path

from curation.errors import ConfigError
from curation.stages.dedup.config import DedupConfig

log = logging.getLogger("curation")
FAISS_GPU_MAX_K = 2048  # k and nprobe of a Faiss GPU search (its top-k kernels)


def check_config(cfg: DedupConfig) -> None:
    """Every dedup setting that would fail later, or silently do the wrong thing."""
    from curation.sources import check_exists

    h = cfg.hashing
    if h.method == "phash" and (h.thumb_size != 32 or h.bits != 64):
        raise ConfigError(
            "dedup.hashing.method: phash uses 32x32 thumbnails and 64 bits "
            f"(set thumb_size: 32 and bits: 64; got {h.thumb_size} and {h.bits})"
        )
    if h.variants.enabled and h.variants.source_size < h.thumb_size:
        raise ConfigError(
            f"dedup.hashing.variants.source_size: {h.variants.source_size} is smaller than the "
            f"thumbnails it is cut into (thumb_size {h.thumb_size}); use at least 2 x thumb_size"
        )
    if h.bits >= h.thumb_size**2:
        raise ConfigError(f"dedup.hashing.bits: {h.bits} bits need thumbnails of more than {h.bits} pixels")
    _check_descriptor(cfg)
    check_helper_gpus(cfg)
    names = [b.name for b in cfg.relative.benchmarks]
    for i, bench in enumerate(cfg.relative.benchmarks):
        if names.count(bench.name) > 1:
            raise ConfigError(f"dedup.relative.benchmarks.{i}.name: '{bench.name}' is used twice")
        check_exists(bench, f"dedup.relative.benchmarks.{i}")


def check_helper_gpus(cfg: DedupConfig) -> None:
    """Helpers granted GPUs need a Faiss built with GPU support; checked by the build, since the
    driver's node may have no GPU of its own."""
    import faiss

    gpus = cfg.graph.workers.num_gpus
    if gpus and not hasattr(faiss, "StandardGpuResources"):
        raise ConfigError(
            f"dedup.graph.workers.num_gpus: {gpus}, but this faiss has no GPU support "
            "(install faiss-gpu, or set dedup.graph.workers.num_gpus: 0)"
        )
    limits = {"copy_dedup.k": cfg.copy_dedup.k, "relative.k": cfg.relative.k}
    limits["copy_dedup.index.nprobe"] = cfg.copy_dedup.index.nprobe
    for key, value in limits.items():
        if gpus and value is not None and value > FAISS_GPU_MAX_K:
            raise ConfigError(
                f"dedup.{key}: {value}, but a search on GPU (dedup.graph.workers.num_gpus: {gpus}) takes at most "
                f"{FAISS_GPU_MAX_K} (a Faiss GPU limit)"
            )


def _check_descriptor(cfg: DedupConfig) -> None:
    """Copy detection needs real weights (random ones merge distinct photographs); their dimension is
    probed here, before any work."""
    d = cfg.descriptor
    if d.weights is None:
        for name, on in (("copy_dedup", cfg.copy_dedup.enabled), ("relative", cfg.relative.enabled)):
            if on and not d.allow_random_weights:
                raise ConfigError(
                    f"dedup.{name}.enabled: copy detection needs dedup.descriptor.weights "
                    "(sscd_disc_mixup.torchscript.pt); random weights merge distinct images "
                    "(descriptor.allow_random_weights: true is for tests only)"
                )
        if not cfg.describes:
            off = "copy and relative dedup are" if cfg.relative.benchmarks else "copy dedup is"
            log.info("dedup: no descriptor weights, %s off (hash pass only)", off)
        return
    if not Path(d.weights).is_file():
        raise ConfigError(f"dedup.descriptor.weights: '{d.weights}' is not a file")
    if cfg.describes:
        from curation.errors import CheckpointError
        from curation.models.sscd import probe_descriptor_dim

        try:
            dims = probe_descriptor_dim(d.weights, d.image_size)
        except CheckpointError as err:
            raise ConfigError(f"dedup.descriptor.weights: {err}") from None
        if dims != d.dims:
            raise ConfigError(
                f"dedup.descriptor.dims: {d.weights} gives {dims}-d descriptors, "
                f"the config says {d.dims} (set dedup.descriptor.dims: {dims})"
            )
