"""One partition of the download stage: checks, background fetching, rows in order.

Statuses are decided in this order, the first that applies winning:
``filtered_url:<reason>``, ``duplicate_url``, ``failed_download:<reason>`` /
``filtered_optout:<directive>``, ``failed_decode:<reason>``,
``duplicate_exact``, ``filtered_nsfw``, ``success``. Duplicates are decided in
row order over the whole partition, so they do not depend on which download
finished first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa

from curation import tables
from curation.download.pipeline import Outcome, Pipeline
from curation.download.shardwriter import ShardWriter
from curation.errors import PartitionError
from curation.models.inference import decode_thread_count
from curation.stages.download.monitor import PartitionStats
from curation.stages.download.rows import Rows, precheck


class PartitionJob:
    """Fetches a partition's URLs (``urls[i]`` has key ``sample_key(partition, i)``)."""

    def __init__(
        self,
        cfg,
        policy,
        processor,
        partition: int,
        urls: list[str | None],
        tar_path: Path,
        seed: int = 0,
        repeated: dict[int, str] | None = None,
        unparseable: dict[int, str] | None = None,
        threads=None,
    ):
        """``repeated``: rows whose URL appeared earlier in the input -> key of its first row;
        ``unparseable``: rows whose input line could not be parsed -> where and why;
        ``threads``: the worker's :class:`~curation.download.pipeline.Threads` (None: the job's own)."""
        self.cfg = cfg
        self.partition = partition
        self.urls = urls
        keys = [tables.sample_key(partition, i) for i in range(len(urls))]
        self.unparseable = unparseable or {}
        self.pre_status, self.url_duplicate_of = precheck(keys, urls, policy, repeated or {}, self.unparseable)
        window = cfg.worker.window or 4 * cfg.http.concurrency
        fetch = [url if status is None else None for url, status in zip(urls, self.pre_status, strict=False)]
        count = decode_thread_count(cfg.worker.decode_threads, cfg.worker.num_cpus)
        self.pipeline = Pipeline(
            cfg.http, policy, processor, fetch, window, count, seed, cfg.worker.pending_bytes, threads
        )
        self.tar = ShardWriter(tar_path)
        self.stats = PartitionStats()
        self.kept_by_sha: dict[str, str] = {}

    def process(self, batch: pa.Table) -> pa.Table:
        """Rows of ``batch`` (status columns, ``url`` and carried columns) in order."""
        keys = batch.column("key").to_pylist()
        carried = batch.drop_columns([c for c in tables.STATUS_COLUMNS + ["url"] if c in batch.column_names])
        carried_rows = carried.to_pylist()
        rows = Rows()
        for key, extra in zip(keys, carried_rows, strict=False):
            row = self._row(rows, key, self._index(key))
            row_retries = row.pop("_retries", 0)
            if row["status"] == tables.SUCCESS:
                self.tar.write_sample(key, row.pop("_data"), _meta(row, extra))
            self.stats.add(row["status"], row["bytes"] or 0, row["stored_bytes"] or 0, row_retries)
        return rows.table(carried)

    def _index(self, key: str) -> int:
        index = int(key[6:])
        if key != tables.sample_key(self.partition, index) or index >= len(self.urls):
            raise PartitionError(f"download partition {self.partition}: unexpected key {key}")
        return index

    def _row(self, rows: Rows, key: str, index: int) -> dict[str, Any]:
        url = self.urls[index]
        pre = self.pre_status[index]
        if pre is not None:
            return rows.add(
                key, pre, url=url, duplicate_of=self.url_duplicate_of[index], error=self.unparseable.get(index)
            )
        outcome = self.pipeline.result(index)
        status, error, values = self._decide(key, outcome)
        row = rows.add(key, status, error=error, url=url, **values)
        # Not columns: carried to ``process`` for the tar and the retry count.
        row["_retries"] = outcome.fetch.retries
        if status == tables.SUCCESS:
            assert outcome.image is not None  # a success has an image
            row["_data"] = outcome.image.data
        return row

    def _decide(self, key: str, outcome: Outcome) -> tuple[str, str | None, dict[str, Any]]:
        fetched, image = outcome.fetch, outcome.image
        values: dict[str, Any] = {"http_status": fetched.http_status, "bytes": fetched.size or None}
        if not fetched.ok:
            return fetched.status, fetched.error, values
        assert image is not None  # a fetch that succeeded was decoded
        values["sha256_original"] = image.sha256_original
        if image.status != tables.SUCCESS:
            return image.status, image.error, values
        assert image.data is not None and image.sha256_original is not None  # a success has both
        values.update(
            stored_bytes=len(image.data),
            format=image.format,
            sha256=image.sha256,
            original_width=image.original_width,
            original_height=image.original_height,
            width=image.width,
            height=image.height,
            nsfw_score=image.nsfw_score,
            faces_blurred=image.faces_blurred,
        )
        if self.cfg.exact_dedup:
            kept = self.kept_by_sha.setdefault(image.sha256_original, key)
            if kept != key:
                return "duplicate_exact", None, {**values, "duplicate_of": kept}
        if image.nsfw_score is not None and image.nsfw_score >= self.cfg.nsfw.threshold:
            return "filtered_nsfw", f"score {image.nsfw_score:.3f}", values
        return tables.SUCCESS, None, values

    def close(self) -> dict[str, Any]:
        self.pipeline.close()
        self.tar.close()
        return {"download": {**self.stats.summary(), "tar_samples": self.tar.samples}}

    def abort(self) -> None:
        self.pipeline.close()
        self.tar.close()


def _meta(row: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Per-sample JSON: the row's values (no status columns) and the carried columns."""
    meta = {k: v for k, v in row.items() if k not in ("dropped_by", "error") and not k.startswith("_")}
    meta.update(extra)
    return meta
