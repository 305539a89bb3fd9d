"""Per-stage counters exported with ``ray.util.metrics``.

They appear on every node's metrics endpoint (Prometheus text, prefixed
``ray_``): ``ray_curation_samples_total{stage,step,status}``,
``ray_curation_partitions_total{stage,step,outcome}``. Counters are created
lazily in the process that reports, only when Ray is initialised.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any


@lru_cache(maxsize=1)
def _counters() -> dict[str, Any] | None:
    import ray

    if not ray.is_initialized():
        return None
    from ray.util.metrics import Counter

    return {
        "samples": Counter(
            "curation_samples",
            description="Samples processed, by stage, step and terminal status.",
            tag_keys=("stage", "step", "status"),
        ),
        "partitions": Counter(
            "curation_partitions",
            description="Partitions finished, by stage, step and outcome.",
            tag_keys=("stage", "step", "outcome"),
        ),
    }


def status_family(status: str) -> str:
    """``failed_download:http_404`` -> ``failed_download``: bounded tag values."""
    return status.split(":", 1)[0]


def report_partition(stats: dict[str, Any]) -> None:
    counters = _counters()
    if counters is None:
        return
    tags = {"stage": stats["stage"], "step": stats["step"]}
    families: dict[str, int] = {}
    for status, n in stats.get("counts", {}).items():
        families[status_family(status)] = families.get(status_family(status), 0) + n
    for family, n in families.items():
        counters["samples"].inc(n, tags={**tags, "status": family})
    counters["partitions"].inc(1, tags={**tags, "outcome": "committed"})


def report_failure(stage: str, step: str) -> None:
    counters = _counters()
    if counters is not None:
        counters["partitions"].inc(1, tags={"stage": stage, "step": step, "outcome": "failed"})
