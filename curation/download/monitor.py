"""Download counters: per-partition stats, and Ray metrics when inside Ray.

Metrics (Prometheus names get Ray's ``ray_`` prefix), all tagged
``stage="download"``: ``curation_download_urls_total{status}`` (status
family: success, failed_download, ...), ``curation_download_bytes_total``,
``curation_download_retries_total``, gauges
``curation_download_urls_per_second`` and ``curation_download_success_ratio``
(of the actor's current partition).
"""

from __future__ import annotations

import collections
import time
from typing import Any

TAGS = {"stage": "download"}


def make_metrics() -> dict[str, Any] | None:
    """Ray metric objects, or None outside an initialised Ray (tests, local runs)."""
    try:
        import ray
    except ImportError:
        return None
    if not ray.is_initialized():
        return None
    from ray.util.metrics import Counter, Gauge

    return {
        "urls": Counter(
            "curation_download_urls", description="URLs finished, by status family.", tag_keys=("stage", "status")
        ),
        "bytes": Counter("curation_download_bytes", description="Bytes downloaded.", tag_keys=("stage",)),
        "retries": Counter("curation_download_retries", description="HTTP retries.", tag_keys=("stage",)),
        "rate": Gauge(
            "curation_download_urls_per_second", description="URLs per second of the partition.", tag_keys=("stage",)
        ),
        "ratio": Gauge(
            "curation_download_success_ratio", description="Success ratio of the partition.", tag_keys=("stage",)
        ),
    }


class PartitionStats:
    """Counts of one partition; ``report`` pushes a batch's increments to Ray metrics."""

    def __init__(self, metrics: dict[str, Any] | None):
        self.metrics = metrics
        self.started = time.monotonic()
        self.counts: collections.Counter[str] = collections.Counter()
        self.bytes_downloaded = 0
        self.bytes_stored = 0
        self.retries = 0

    def add(self, status: str, downloaded: int, stored: int, retries: int) -> None:
        self.counts[status] += 1
        self.bytes_downloaded += downloaded
        self.bytes_stored += stored
        self.retries += retries

    def report(self, statuses: list[str], downloaded: int, retries: int) -> None:
        """Push one batch's increments (its statuses, bytes and retries) to the Ray metrics."""
        if self.metrics is None:
            return
        families = collections.Counter(s.split(":", 1)[0] for s in statuses)
        for family, n in families.items():
            self.metrics["urls"].inc(n, tags={**TAGS, "status": family})
        if downloaded:
            self.metrics["bytes"].inc(downloaded, tags=TAGS)
        if retries:
            self.metrics["retries"].inc(retries, tags=TAGS)
        summary = self.summary()
        self.metrics["rate"].set(summary["urls_per_s"], tags=TAGS)
        self.metrics["ratio"].set(summary["success_ratio"], tags=TAGS)

    def summary(self) -> dict[str, Any]:
        seconds = max(time.monotonic() - self.started, 1e-9)
        total = sum(self.counts.values())
        success = self.counts.get("success", 0)
        return {
            "urls": total,
            "success": success,
            "success_ratio": round(success / total, 4) if total else 0.0,
            "bytes_downloaded": self.bytes_downloaded,
            "bytes_stored": self.bytes_stored,
            "retries": self.retries,
            "download_seconds": round(seconds, 3),
            "urls_per_s": round(total / seconds, 2),
            "images_per_s": round(success / seconds, 2),
        }
