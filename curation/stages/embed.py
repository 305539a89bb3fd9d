"""Stage ``embed``: ViT embeddings of the pool and of the curated datasets.

Steps:

- ``pool`` (map, the stage table): one actor per GPU (or CPU workers), each
  loading the model once. Inside an actor a thread pool reads and decodes
  the next batch of images while the model runs on the current one. Alive
  rows are embedded (L2-normalised) into ``pool.files/part-NNNNNN.npy``; the table
  adds ``embedding_row`` (row in that ``.npy``, -1 if not embedded). Images
  that cannot be decoded are dropped with ``failed_decode:<reason>``.
- ``curated_parts`` (map) and ``curated`` (global): each dataset of
  ``embed.curated`` is embedded the same way, partition by partition, then
  joined into ``curated/<name>.npy`` + ``curated/<name>.parquet``
  (:mod:`curation.stages.embed_curated`).

File formats and the reading API are in :mod:`curation.embeddings`. Both
steps record the model (kind, arch, weights, and whether they are random)
in their stats.
"""

from __future__ import annotations

import collections
import json
import logging
from pathlib import Path
from typing import Any, Iterator, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field

from curation import embeddings, tables
from curation.config import RUNTIME, Section
from curation.errors import ConfigError
from curation.preprocess import IMAGENET_MEAN, IMAGENET_STD, PreprocessSpec, submit_batch
from curation.sources import ImageSetConfig, check_exists
from curation.stages.base import MapStep, Resources, Stage, device_gpus
from curation.stages.registry import register

log = logging.getLogger("curation")
STAGE = "embed"
# The kinds of curation.models.checkpoints.load_model (not imported here: it imports torch).
MODEL_KINDS = Literal["dinov2", "dino", "ibot", "timm", "open_clip", "torchscript", "curation", "random"]


class ModelConfig(Section):
    kind: MODEL_KINDS = Field(..., description="checkpoint format; random = untrained weights (demos, tests)")
    path: str | None = Field(None, description="local checkpoint file (every kind but random)")
    arch: str | None = Field(None, description="architecture: vit_huge16, ... (timm/open_clip: their name)")
    image_size: int = Field(224, ge=16, description="side of the centre crop fed to the model")
    resize_size: int | None = Field(None, ge=16, description="short side before the crop (null: size*256/224)")
    interpolation: Literal["bicubic", "bilinear", "nearest", "lanczos"] = Field(
        "bicubic", description="resampling filter of the resize"
    )
    mean: tuple[float, float, float] = Field(IMAGENET_MEAN, description="per-channel mean (RGB, 0-1 scale)")
    std: tuple[float, float, float] = Field(IMAGENET_STD, description="per-channel std (RGB, 0-1 scale)")
    options: dict[str, Any] = Field(
        default_factory=dict, description="extra load_model arguments (ViT overrides, seed of random weights)"
    )


class EmbedConfig(Section):
    model: ModelConfig = Field(..., description="the embedding model")
    batch_size: int = Field(64, ge=1, description="images per forward pass", json_schema_extra=RUNTIME)
    device: Literal["auto", "cuda", "cpu"] = Field("auto", description="auto: one GPU per worker when present")
    precision: Literal["bf16", "fp16", "fp32"] = Field("bf16", description="autocast dtype on GPU (CPU: fp32)")
    storage_dtype: Literal["float16", "float32"] = Field("float16", description="dtype of the .npy files")
    decode_threads: int = Field(
        0, ge=0, description="threads per worker reading and decoding images (0: two per CPU of num_cpus)",
        json_schema_extra=RUNTIME)
    num_cpus: float = Field(1.0, gt=0, description="CPUs reserved per worker", json_schema_extra=RUNTIME)
    draft: bool = Field(False, description="JPEG draft decoding (faster, pixels differ slightly)")
    curated: list[ImageSetConfig] = Field(default_factory=list, description="curated datasets to embed too")
    curated_partition_size: int = Field(
        10_000, ge=1, description="images per partition of a curated set (the unit of work of curated_parts)"
    )


class Embedder:
    """Model, device and decode threads of one worker (:class:`~curation.models.inference.Inference`)."""

    def __init__(self, cfg: EmbedConfig, gpus: float = 0.0):
        """``gpus``: the GPUs the runner granted this worker (its device follows them)."""
        import torch

        from curation.models.checkpoints import load_model
        from curation.models.inference import Inference, decode_thread_count

        if gpus and not torch.cuda.is_available():
            if cfg.device == "cuda":
                raise ConfigError("embed.device: cuda requested but this worker sees no GPU")
            log.warning("embed: granted %g GPU(s) but torch sees none (CPU build?): embedding on CPU", gpus)
        device = "cuda" if gpus and torch.cuda.is_available() else "cpu"
        m = cfg.model
        self.spec = PreprocessSpec(m.image_size, m.resize_size, m.interpolation, tuple(m.mean), tuple(m.std),
                                   cfg.draft)
        self.inference = Inference(load_model(m.kind, m.path, m.arch, **m.options), device, cfg.precision,
                                   cfg.batch_size, decode_thread_count(cfg.decode_threads, cfg.num_cpus),
                                   self.spec.mean, self.spec.std, config_key="embed.device")
        self.model = self.inference.model
        self.dim = self.inference.probe(m.image_size)
        self.info = {
            "kind": m.kind, "arch": m.arch, "path": m.path, "weights": getattr(self.model, "source", m.path),
            "random_weights": m.kind == "random", "dim": self.dim, "image_size": m.image_size,
            **self.inference.info(),
        }

    def forward(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 ``(B, S, S, 3)`` -> L2-normalised float32 embeddings ``(B, D)``."""
        import torch
        import torch.nn.functional as F

        return F.normalize(torch.from_numpy(self.inference.forward(pixels)), dim=1).numpy()

    def submit(self, items, fetch=None):
        return submit_batch(items, self.spec, self.inference.pool, fetch)


def _decoded_columns(table: pa.Table, decoded, first_row: int) -> pa.Table:
    """Status columns with decode failures dropped, plus ``embedding_row``.

    Rows that were not decoded at all (dropped upstream) have no reason and pass through.
    """
    ok = decoded.ok
    failed = np.array([r is not None for r in decoded.reasons], dtype=bool)
    out = table.select(tables.STATUS_COLUMNS)
    if failed.any():
        statuses = [f"failed_decode:{r}" if r else None for r in decoded.reasons]
        out = tables.drop(out, failed, STAGE, statuses, decoded.errors)
    rows = np.full(table.num_rows, -1, dtype=np.int64)
    rows[ok] = first_row + np.arange(int(ok.sum()))
    return out.append_column(embeddings.ROW_COLUMN, pa.array(rows))


class EmbedPool(MapStep):
    name = embeddings.POOL_STEP
    # Dropped rows come too, so that they get embedding_row -1 rather than null.
    alive_only = False

    def resources(self) -> Resources:
        return Resources(num_cpus=self.cfg.num_cpus, num_gpus=device_gpus(self.cfg.device))

    def batch_size(self) -> int:
        return self.cfg.batch_size

    def setup(self) -> None:
        from curation.models.inference import Prefetch

        self.embedder = Embedder(self.cfg, self.grant.num_gpus)
        self.prefetch = Prefetch(self._submit, self.alive_only)

    def open(self, partition: int, out) -> None:
        from curation.imagestore import pool_images

        self.images = pool_images(self.ctx.run_dir, partition)
        self.writer = embeddings.NpyAppender(out.path("npy"), self.embedder.dim, self.cfg.storage_dtype)
        self.prefetch.clear()
        self.counts = collections.Counter()

    def _fetch(self, key: str | None) -> bytes | None:
        # Runs on the decode threads: TarImages opens the file per read.
        return self.images.get(key) if key is not None and key in self.images else None

    def _submit(self, batch: pa.Table):
        keys = batch.column("key").to_pylist()
        return self.embedder.submit([k if a else None for k, a in zip(keys, tables.alive(batch))], self._fetch)

    def read(self, partition: int) -> Iterator[pa.Table]:
        """Input batches, each yielded once the next one's decoding has started."""
        return self.prefetch.ahead(super().read(partition))

    def process_batch(self, batch: pa.Table) -> pa.Table:
        decoded = self.prefetch.take(batch)
        alive = tables.alive(batch)
        decoded.ok &= alive  # dropped rows were never decoded; keep them out of the counts
        decoded.reasons = [r if a else None for r, a in zip(decoded.reasons, alive)]
        out = _decoded_columns(batch, decoded, self.writer.rows)
        if decoded.ok.any():
            self.writer.append(self.embedder.forward(decoded.pixels[decoded.ok]))
        self.counts.update(embedded=int(decoded.ok.sum()), failed_decode=int((alive & ~decoded.ok).sum()))
        return out

    def close(self) -> dict[str, Any]:
        self.writer.close()
        return {**self.counts, "model": self.embedder.info}


def _chunks(items: Iterator, size: int) -> Iterator[list]:
    chunk: list = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _curated_table(chunk: list, decoded, first_row: int) -> pa.Table:
    keys = [key for key, _, _ in chunk]
    metas = [meta for _, _, meta in chunk]
    base = tables.status_table(keys, [tables.SUCCESS] * len(keys))
    if decoded is None:
        base = base.append_column(embeddings.ROW_COLUMN, pa.array([], pa.int64()))
    else:
        base = _decoded_columns(base, decoded, first_row)
    label = [None if m.get("label") is None else str(m["label"]) for m in metas]
    rest = [json.dumps({k: v for k, v in m.items() if k not in ("path", "label")}, sort_keys=True) for m in metas]
    return (base.append_column("path", pa.array([m.get("path") for m in metas], pa.string()))
            .append_column("label", pa.array(label, pa.string()))
            .append_column("meta", pa.array(rest, pa.string())))


from curation.stages.embed_curated import CuratedParts, EmbedCurated  # noqa: E402 -- they use this module

@register
class EmbedStage(Stage):
    name = STAGE
    config_model = EmbedConfig
    inputs = ("dedup",)
    steps = (EmbedPool, CuratedParts, EmbedCurated)
    table_step = embeddings.POOL_STEP

    @classmethod
    def check(cls, config: Any) -> None:
        cfg = config.embed
        m = cfg.model
        if m.kind != "random" and not m.path:
            raise ConfigError(f"embed.model.path: model kind '{m.kind}' needs a local checkpoint file")
        if m.path and not Path(m.path).exists():
            raise ConfigError(f"embed.model.path: '{m.path}' does not exist")
        if m.kind in ("random", "timm", "open_clip") and not m.arch:
            raise ConfigError(f"embed.model.arch: model kind '{m.kind}' needs an architecture name")
        if m.kind in ("torchscript", "curation") and (m.arch or m.options):
            raise ConfigError(
                f"embed.model.arch: model kind '{m.kind}' takes its architecture from the file; "
                "set embed.model.arch=null and embed.model.options={}"
            )
        if m.resize_size is not None and m.resize_size < m.image_size:
            raise ConfigError("embed.model.resize_size: must be at least embed.model.image_size")
        names = [s.name for s in cfg.curated]
        if len(set(names)) != len(names):
            raise ConfigError(f"embed.curated: dataset names must be unique, got {names}")
        for i, image_set in enumerate(cfg.curated):
            check_exists(image_set, f"embed.curated.{i}")

    @classmethod
    def preflight(cls, config: Any) -> list[str]:
        """The checks of :meth:`check`, then the model loaded and run on one blank image."""
        problems = super().preflight(config)
        if problems:
            return problems
        import torch

        from curation.models.checkpoints import load_model

        m = config.embed.model
        try:
            model = load_model(m.kind, m.path, m.arch, **m.options)
            with torch.inference_mode():
                out = model(torch.zeros(1, 3, m.image_size, m.image_size))
        except Exception as err:  # noqa: BLE001 -- any failure to load or run is this key's problem
            return [(f"embed.model: the model does not load or run on a {m.image_size}x{m.image_size} image: "
                     f"{type(err).__name__}: {err}")]
        if out.ndim != 2 or out.shape[0] != 1:
            return [(f"embed.model: gives outputs of shape {tuple(out.shape)} for one image; "
                     "expected (1, dim) features")]
        return []
