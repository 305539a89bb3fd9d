"""The expected composition of a pipeline, like Table 15 (``curate plan`` prints it).

Computed from the configuration alone, before any data is read:

- ``as_is``: the query set itself, ``final = images``;
- ``sample``: ``retrieved = images x k``, ``final = min(retrieved, cap)``;
- ``cluster``: how many clusters qualify depends on the data, so the plan
  takes ``expected_clusters`` from the config:
  ``retrieved = expected_clusters x per_cluster``, ``final = min(retrieved, cap)``.

``images`` is the query set's ``size`` from its image-set config (counted
for a local folder when not given). With ``collisions: best`` the finals of
retrieval rows are upper bounds: an image hit twice is kept once. With
``keep_duplicates`` they are exact up to clusters with fewer alive images
than ``per_cluster``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from curation.sources import IMAGE_SUFFIXES, ImageSetConfig

MODES = ("as_is", "sample", "cluster")


@dataclass(frozen=True)
class PlanRow:
    name: str
    task: str
    title: str
    images: int | None
    mode: str
    retrieved: int | None
    final: int | None
    upper_bound: bool = False


def query_set_size(source: ImageSetConfig) -> int | None:
    """Configured size, else the image count of an existing local folder."""
    if source.size is not None:
        return source.size if source.limit is None else min(source.size, source.limit)
    root = Path(source.path)
    if source.kind != "folder" or not root.is_dir():
        return None
    count = sum(1 for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    return count if source.limit is None else min(count, source.limit)


def plan_rows(config: Any) -> list[PlanRow]:
    """One row per ``retrieve.datasets`` entry of a validated pipeline config."""
    from curation.stages.retrieve.stage import resolve_source

    retrieve = config.retrieve
    rows = []
    for i, entry in enumerate(retrieve.datasets):
        source = resolve_source(config, entry, f"retrieve.datasets.{i}")
        images = query_set_size(source)
        retrieved = _retrieved(entry, images)
        final = retrieved if entry.mode != "as_is" else images
        if final is not None and entry.cap is not None:
            final = min(final, entry.cap)
        rows.append(
            PlanRow(
                name=entry.name,
                task=entry.task or "",
                title=entry.title or entry.name,
                images=images,
                mode=entry.mode,
                retrieved=retrieved,
                final=final,
                upper_bound=entry.mode != "as_is" and retrieve.collisions == "best",
            )
        )
    return rows


def _retrieved(entry: Any, images: int | None) -> int | None:
    if entry.mode == "sample":
        return None if images is None else images * entry.k
    if entry.mode == "cluster":
        return None if entry.expected_clusters is None else entry.expected_clusters * entry.per_cluster
    return None


def totals(rows: list[PlanRow]) -> dict[str, int | None]:
    """Final images per mode and overall; None where a row's final is unknown."""
    out: dict[str, int | None] = {}
    for mode in (*MODES, "total"):
        picked = [r.final for r in rows if mode == "total" or r.mode == mode]
        known = [f for f in picked if f is not None]
        out[mode] = sum(known) if len(known) == len(picked) else None
    return out
