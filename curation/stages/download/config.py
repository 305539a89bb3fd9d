"""Config sections of the download stage (``download:`` in a pipeline).

The sections of its building blocks (URLs, HTTP, images, NSFW, faces) are in
:mod:`curation.download.config`. Every size is in bytes or pixels, every
duration in seconds.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from curation.download.config import FacesConfig, HttpConfig, ImageConfig, NsfwConfig, UrlConfig
from curation.section import RUNTIME, Section


class InputConfig(Section):
    paths: list[str] = Field(
        ...,
        min_length=1,
        description="URL-list files, directories or glob patterns; local paths or fsspec URLs (s3://, gs://, ...)",
    )
    format: Literal["auto", "parquet", "csv", "tsv", "jsonl", "txt"] = Field(
        "auto", description="list format; auto: from the file extension (.gz/.zst/.bz2 allowed on text formats)"
    )
    url_column: str = Field("url", description="column holding the URL (txt lists: the name given to it)")
    columns: list[str] | None = Field(
        None, description="extra columns carried into the table and the per-sample JSON (null: all of them)"
    )
    partition_size: int = Field(10000, ge=1, description="input rows per partition, the resumable unit")
    duplicate_urls: Literal["global", "partition"] = Field(
        "global",
        description="find repeated URLs over the whole input (URLs held in memory once at planning) "
        "or within each partition",
    )


class WorkerConfig(Section):
    num_cpus: float = Field(1.0, gt=0, description="CPUs reserved by each download actor")
    decode_threads: int = Field(
        0, ge=0, description="threads decoding, resizing and encoding per actor (0: two per CPU of 'num_cpus')"
    )
    batch_size: int = Field(256, ge=1, description="rows per batch handed to an actor")
    window: int = Field(0, ge=0, description="samples fetched ahead of the writer per actor (0: 4 x http.concurrency)")
    pending_bytes: int = Field(
        256 * 2**20, ge=2**20, description="downloaded bytes waiting for decoding per actor before fetching pauses"
    )


class DownloadConfig(Section):
    input: InputConfig = Field(..., description="where the URL lists are and how to split them")
    urls: UrlConfig = Field(UrlConfig(), description="URL filtering before any request")
    http: HttpConfig = Field(HttpConfig(), description="HTTP fetching")
    image: ImageConfig = Field(ImageConfig(), description="decoding, resizing and re-encoding")
    nsfw: NsfwConfig = Field(NsfwConfig(), description="NSFW filtering (off by default)")
    faces: FacesConfig = Field(FacesConfig(), description="face blurring (off by default)")
    exact_dedup: bool = Field(
        True, description="drop later samples whose original bytes equal an earlier one's in the partition"
    )
    worker: WorkerConfig = Field(WorkerConfig(), description="actor resources and batching", json_schema_extra=RUNTIME)

    @model_validator(mode="after")
    def _window(self) -> DownloadConfig:
        if self.worker.window and self.worker.window < self.http.concurrency:
            raise ValueError("worker.window must be 0 or at least http.concurrency")
        return self
