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
  (:mod:`curation.stages.embed.curated`).

File formats and the reading API are in :mod:`curation.stages.embed.arrays`. Both
steps record the model (kind, arch, weights, and whether they are random)
in their stats.
"""

from __future__ import annotations

import collections
import logging
from pathlib import Path
from typing import Any

import pyarrow as pa

from curation import tables
from curation.errors import ConfigError
from curation.models.inference import PendingBatch
from curation.sources import check_exists
from curation.stages.base import MapStep, Resources, Stage, device_gpus
from curation.stages.embed import arrays as embeddings
from curation.stages.embed.config import EmbedConfig
from curation.stages.embed.curated import CuratedParts, EmbedCurated
from curation.stages.embed.model import STAGE, EmbeddingModel, decoded_columns
from curation.stages.registry import register

log = logging.getLogger("curation")


class EmbedPool(MapStep[EmbedConfig]):
    name = embeddings.POOL_STEP
    # Dropped rows come too, so that they get embedding_row -1 rather than null.
    alive_only = False

    def resources(self) -> Resources:
        return Resources(num_cpus=self.cfg.num_cpus, num_gpus=device_gpus(self.cfg.device))

    def batch_size(self) -> int:
        return self.cfg.batch_size

    def setup(self) -> None:
        from curation.models.inference import Prefetch

        self.embedder = EmbeddingModel(self.cfg, self.grant.num_gpus)
        self.decoding = Prefetch(self._submit)

    def open(self, partition: int, out) -> None:
        from curation.imagestore import pool_images

        self.images = pool_images(self.ctx.run_dir, partition)
        self.writer = embeddings.NpyAppender(out.path("npy"), self.embedder.dim, self.cfg.storage_dtype)
        self.decoding.clear()
        self.counts: collections.Counter[str] = collections.Counter()

    def _fetch(self, key: str | None) -> bytes | None:
        # Runs on the decode threads: TarImages opens the file per read.
        return self.images.get(key) if key is not None and key in self.images else None

    def _submit(self, batch: pa.Table) -> PendingBatch:
        keys = batch.column("key").to_pylist()
        alive = tables.alive(batch)
        return self.embedder.submit([k if a else None for k, a in zip(keys, alive, strict=True)], self._fetch)

    def prefetch(self, batch: pa.Table) -> None:
        self.decoding.start(batch)

    def process_batch(self, batch: pa.Table) -> pa.Table:
        decoded = self.decoding.take(batch)
        alive = tables.alive(batch)
        decoded.ok &= alive  # dropped rows were never decoded; keep them out of the counts
        decoded.reasons = [r if a else None for r, a in zip(decoded.reasons, alive, strict=False)]
        out = decoded_columns(batch, decoded, self.writer.rows)
        if decoded.ok.any():
            self.writer.append(self.embedder.forward(decoded.pixels[decoded.ok]))
        self.counts.update(embedded=int(decoded.ok.sum()), failed_decode=int((alive & ~decoded.ok).sum()))
        return out

    def close(self) -> dict[str, Any]:
        self.writer.close()
        return {**self.counts, "model": self.embedder.info}


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
            return [
                (
                    f"embed.model: the model does not load or run on a {m.image_size}x{m.image_size} image: "
                    f"{type(err).__name__}: {err}"
                )
            ]
        if out.ndim != 2 or out.shape[0] != 1:
            return [
                (f"embed.model: gives outputs of shape {tuple(out.shape)} for one image; expected (1, dim) features")
            ]
        return []
