"""Download counters: per-partition stats, and the metrics of each batch as data.

The fetch step reports them (:meth:`~curation.stages.base.MapStep.batch_metrics`)
and the runner exports them, tagged ``stage="download"`` and ``step="fetch"``
(Prometheus names get Ray's ``ray_`` prefix): ``curation_download_urls_total{status}``
(status family: success, failed_download, ...), ``curation_download_bytes_total``,
``curation_download_retries_total``, gauges ``curation_download_urls_per_second``
and ``curation_download_success_ratio`` (of the actor's current partition).
"""

from __future__ import annotations

import collections
import time
from typing import Any

URLS = "curation_download_urls"
BYTES = "curation_download_bytes"
RETRIES = "curation_download_retries"
RATE = "curation_download_urls_per_second"
RATIO = "curation_download_success_ratio"


class PartitionStats:
    """Counts of one partition; ``metrics`` gives the increments since its last call."""

    def __init__(self):
        self.started = time.monotonic()
        self.counts: collections.Counter[str] = collections.Counter()
        self.bytes_downloaded = 0
        self.bytes_stored = 0
        self.retries = 0
        self._reported: tuple[collections.Counter[str], int, int] = (collections.Counter(), 0, 0)

    def add(self, status: str, downloaded: int, stored: int, retries: int) -> None:
        self.counts[status] += 1
        self.bytes_downloaded += downloaded
        self.bytes_stored += stored
        self.retries += retries

    def metrics(self) -> list[tuple[str, float, dict[str, str]]]:
        """``(name, value, tags)`` since the last call: URLs by status family, bytes and retries (increments),
        the partition's rate and success ratio (gauges)."""
        families: collections.Counter[str] = collections.Counter()
        for status, n in self.counts.items():
            families[status.split(":", 1)[0]] += n
        reported, downloaded, retries = self._reported
        self._reported = (families, self.bytes_downloaded, self.retries)
        out: list[tuple[str, float, dict[str, str]]] = [
            (URLS, n - reported[family], {"status": family})
            for family, n in sorted(families.items())
            if n > reported[family]
        ]
        if self.bytes_downloaded > downloaded:
            out.append((BYTES, self.bytes_downloaded - downloaded, {}))
        if self.retries > retries:
            out.append((RETRIES, self.retries - retries, {}))
        summary = self.summary()
        return [*out, (RATE, summary["urls_per_s"], {}), (RATIO, summary["success_ratio"], {})]

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
