"""The embed stage's model and the tables of its embedded batches, shared by the
pool step (:mod:`curation.stages.embed.stage`) and the curated steps
(:mod:`curation.stages.embed.curated`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa

from curation import tables
from curation.errors import ConfigError
from curation.models.inference import PendingBatch, submit_batch
from curation.preprocess import PreprocessSpec
from curation.stages.embed import arrays as embeddings

log = logging.getLogger("curation")
STAGE = "embed"


class EmbeddingModel:
    """Model, device and decode threads of one worker (:class:`~curation.models.inference.Inference`)."""

    def __init__(self, cfg: Any, gpus: float = 0.0):
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
        self.spec = PreprocessSpec(m.image_size, m.resize_size, m.interpolation, tuple(m.mean), tuple(m.std), cfg.draft)
        self.inference = Inference(
            load_model(m.kind, m.path, m.arch, **m.options),
            device,
            cfg.precision,
            cfg.batch_size,
            decode_thread_count(cfg.decode_threads, cfg.num_cpus),
            self.spec.mean,
            self.spec.std,
            config_key="embed.device",
        )
        self.model = self.inference.model
        self.dim = self.inference.probe(m.image_size)
        self.info = {
            "kind": m.kind,
            "arch": m.arch,
            "path": m.path,
            "weights": getattr(self.model, "source", m.path),
            "random_weights": m.kind == "random",
            "dim": self.dim,
            "image_size": m.image_size,
            **self.inference.info(),
        }

    def forward(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 ``(B, S, S, 3)`` -> L2-normalised float32 embeddings ``(B, D)``."""
        import torch
        import torch.nn.functional as F

        return F.normalize(torch.from_numpy(self.inference.forward(pixels)), dim=1).numpy()

    def submit(self, items, fetch=None) -> PendingBatch:
        return submit_batch(items, self.spec, self.inference.pool, fetch)


def decoded_columns(table: pa.Table, decoded, first_row: int) -> pa.Table:
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


def chunks(items: Iterator, size: int) -> Iterator[list]:
    chunk: list = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def curated_table(chunk: list, decoded, first_row: int) -> pa.Table:
    keys = [key for key, _, _ in chunk]
    metas = [meta for _, _, meta in chunk]
    base = tables.status_table(keys, [tables.SUCCESS] * len(keys))
    if decoded is None:
        base = base.append_column(embeddings.ROW_COLUMN, pa.array([], pa.int64()))
    else:
        base = decoded_columns(base, decoded, first_row)
    label = [None if m.get("label") is None else str(m["label"]) for m in metas]
    rest = [json.dumps({k: v for k, v in m.items() if k not in ("path", "label")}, sort_keys=True) for m in metas]
    return (
        base.append_column("path", pa.array([m.get("path") for m in metas], pa.string()))
        .append_column("label", pa.array(label, pa.string()))
        .append_column("meta", pa.array(rest, pa.string()))
    )
