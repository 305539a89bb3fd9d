"""Fetching a small URL list outside the stage (query sets, benchmark sets).

Same safety as the stage (URL policy, checked DNS and redirects, byte limit,
opt-out header); the original bytes of each success are returned undecoded.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import cast

from curation.download.config import HttpConfig, UrlConfig
from curation.download.lists import file_format, read_file
from curation.download.pipeline import Pipeline
from curation.download.urls import policy_from_config

log = logging.getLogger("curation")


def _identity(data: bytes) -> bytes:
    return data


def fetch_images(
    path: str, url_column: str = "url", http: HttpConfig | None = None, urls: UrlConfig | None = None
) -> Iterator[tuple[str, bytes]]:
    """``(url, bytes)`` of each URL of the list at ``path`` that downloads, in list order."""
    parsed = read_file(path, file_format(path, "auto"), url_column)
    if parsed.bad:
        log.warning("%s: %d unparseable lines skipped", path, len(parsed.bad))
    listed = [u if isinstance(u, str) else None for u in parsed.table.column(url_column).to_pylist()]
    http = http or HttpConfig()
    with Pipeline(
        http, policy_from_config(urls or UrlConfig()), _identity, listed, window=4 * http.concurrency
    ) as pipeline:
        for index, url in enumerate(listed):
            if not url:
                continue
            outcome = pipeline.result(index)
            if outcome.fetch.ok:
                yield url, cast(bytes, outcome.image)  # _identity: the "image" is the bytes
            else:
                log.info("skipped %s: %s %s", url[:200], outcome.fetch.status, outcome.fetch.error or "")
