"""The download table: its columns, and the URL checks made before any request."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from curation import tables
from curation.download.urls import UrlPolicy, check_url

STAGE = "download"
# Columns after the status columns, in order; carried input columns follow.
FIELDS = [
    pa.field("url", pa.string()),
    pa.field("http_status", pa.int32()),
    pa.field("bytes", pa.int64()),
    pa.field("stored_bytes", pa.int64()),
    pa.field("format", pa.string()),
    pa.field("sha256_original", pa.string()),
    pa.field("sha256", pa.string()),
    pa.field("original_width", pa.int32()),
    pa.field("original_height", pa.int32()),
    pa.field("width", pa.int32()),
    pa.field("height", pa.int32()),
    pa.field("nsfw_score", pa.float32()),
    pa.field("faces_blurred", pa.int32()),
    pa.field("duplicate_of", pa.string()),
]
SCHEMA = pa.schema(tables.STATUS_FIELDS + FIELDS)
COLUMNS = [f.name for f in SCHEMA]
CARRIED_PREFIX = "input_"
UNPARSEABLE = "unparseable"  # ``filtered_url:unparseable``: an input line that could not be parsed


def carried_name(name: str) -> str:
    """Name of a carried input column in the table: prefixed when it collides with ours."""
    return f"{CARRIED_PREFIX}{name}" if name in COLUMNS else name


class Rows:
    """Column lists of one batch, appended row by row, then one Arrow table."""

    def __init__(self):
        self.columns: dict[str, list] = {name: [] for name in COLUMNS}

    def add(self, key: str, status: str, **values) -> dict:
        row: dict[str, Any] = {name: None for name in COLUMNS}
        row.update(values, key=key, status=status)
        if status != tables.SUCCESS:
            row["dropped_by"] = STAGE
        for name, value in row.items():
            self.columns[name].append(value)
        return row

    def table(self, carried: pa.Table | None = None) -> pa.Table:
        table = pa.table(
            {name: pa.array(self.columns[name], f.type) for name, f in zip(COLUMNS, SCHEMA, strict=False)},
            schema=SCHEMA,
        )
        if carried is not None:  # already renamed by the reader (``carried_name``)
            for name, column in zip(carried.column_names, carried.columns, strict=False):
                table = table.append_column(name, column)
        return table


def precheck(
    keys: list[str],
    urls: list[str | None],
    policy: UrlPolicy,
    repeated: dict[int, str],
    unparseable: dict[int, str] | None = None,
) -> tuple[list, list]:
    """Per row, the status decided before any request (or None) and the key it duplicates.

    Rows in ``unparseable`` (input lines that could not be parsed) are
    ``filtered_url:unparseable``.

    The first occurrence of a URL is fetched; later ones are ``duplicate_url``
    with ``duplicate_of`` naming the first: from ``repeated`` (row index ->
    key, found over the whole input) or else from earlier rows of the partition.
    """
    statuses: list[str | None] = []
    duplicate_of: list[str | None] = []
    first: dict[str, str] = {}
    for index, (key, url) in enumerate(zip(keys, urls, strict=False)):
        reason = UNPARSEABLE if unparseable and index in unparseable else check_url(url, policy)
        if reason:
            statuses.append(f"filtered_url:{reason}")
            duplicate_of.append(None)
            continue
        assert url is not None  # check_url refuses a missing URL
        kept = repeated.get(index) or first.setdefault(url, key)
        statuses.append("duplicate_url" if kept != key else None)
        duplicate_of.append(kept if kept != key else None)
    return statuses, duplicate_of
