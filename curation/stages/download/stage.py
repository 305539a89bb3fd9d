"""The download stage: URL lists to filtered, decoded, resized images in tar shards.

One map step, ``fetch``. It reads URL lists (not an upstream table), splits
them into partitions by a plan stored in ``fetch.files/``, and writes per
partition ``fetch/part-NNNNNN.parquet`` (one row per input URL) and
``fetch.files/part-NNNNNN.tar`` (``{key}.jpg`` + ``{key}.json`` per success). See
``docs/download.md``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from curation import tables
from curation.stages.base import MapStep, Metric, PartitionOutput, Resources, Stage
from curation.stages.download import monitor
from curation.stages.download.config import DownloadConfig
from curation.stages.registry import register

if TYPE_CHECKING:
    from curation.stages.download.inputs import PartitionReader
    from curation.stages.download.job import PartitionJob

PLAN_FILE = "plan.json"


class FetchStep(MapStep[DownloadConfig]):
    name = "fetch"
    metrics = (
        Metric(monitor.URLS, "URLs finished, by status family.", ("status",)),
        Metric(monitor.BYTES, "Bytes downloaded."),
        Metric(monitor.RETRIES, "HTTP retries."),
        Metric(monitor.RATE, "URLs per second of the partition.", gauge=True),
        Metric(monitor.RATIO, "Success ratio of the partition.", gauge=True),
    )

    def __init__(self, ctx):
        super().__init__(ctx)
        self._plan: dict[str, Any] | None = None
        self._reader: PartitionReader | None = None
        self._loaded: tuple[int, pa.Table] | None = None
        self._job: PartitionJob | None = None
        self._policy = self._processor = self._threads = None

    def resources(self) -> Resources:
        return Resources(num_cpus=self.cfg.worker.num_cpus)

    def batch_size(self) -> int:
        return self.cfg.worker.batch_size

    def plan(self) -> dict[str, Any]:
        """The partition plan: made and stored on first use, then reused."""
        if self._plan is None:
            from curation.stages.download.inputs import load_or_make_plan

            self._plan = load_or_make_plan(self.ctx.files_dir(self.name) / PLAN_FILE, self.cfg.input)
        return self._plan

    def partitions(self) -> list[int]:
        from curation.stages.download.inputs import check_unchanged

        plan = self.plan()
        check_unchanged(plan)
        return list(range(plan["partitions"]))

    def num_rows(self, partition: int) -> int:
        from curation.stages.download.inputs import partition_rows

        return partition_rows(self.plan(), partition)

    def _rows(self, partition: int) -> pa.Table:
        """``url`` + carried columns of a partition (read once, shared by ``open`` and ``read``)."""
        if self._loaded is None or self._loaded[0] != partition:
            from curation.stages.download.inputs import PartitionReader

            if self._reader is None:
                from curation.stages.download.inputs import duplicates_path

                self._reader = PartitionReader(
                    self.plan(),
                    self.cfg.input.url_column,
                    self.cfg.input.columns,
                    duplicates_path(self.ctx.files_dir(self.name) / PLAN_FILE),
                )
            self._loaded = (partition, self._reader.read(partition))
        return self._loaded[1]

    def read(self, partition: int) -> Iterator[pa.Table]:
        rows = self._rows(partition)
        keys = [tables.sample_key(partition, i) for i in range(rows.num_rows)]
        status = tables.status_table(keys, [tables.SUCCESS] * len(keys))
        table = pa.Table.from_arrays(status.columns + rows.columns, names=status.column_names + rows.column_names)
        size = self.batch_size()
        for start in range(0, table.num_rows, size):
            yield table.slice(start, size)

    def setup(self) -> None:
        from curation.download.pipeline import Threads
        from curation.download.process import ImageProcessor
        from curation.download.urls import policy_from_config
        from curation.models.inference import decode_thread_count

        self._policy = policy_from_config(self.cfg.urls)
        self._processor = ImageProcessor(self.cfg.image, self.cfg.faces, self.cfg.nsfw)
        worker = self.cfg.worker
        self._threads = Threads(decode_thread_count(worker.decode_threads, worker.num_cpus))

    def open(self, partition: int, out: PartitionOutput) -> None:
        from curation.stages.download.job import PartitionJob

        if self._policy is None:
            self.setup()
        if self._job is not None:  # left by a partition that raised
            self._job.abort()
        urls = self._rows(partition).column("url").to_pylist()
        assert self._reader is not None  # _rows made it
        self._job = PartitionJob(
            self.cfg,
            self._policy,
            self._processor,
            partition,
            urls,
            out.path("tar"),
            seed=self.ctx.seed + partition,
            repeated=self._reader.repeated(partition),
            unparseable=self._reader.unparseable(partition),
            threads=self._threads,
        )

    def process_batch(self, batch: pa.Table) -> pa.Table:
        assert self._job is not None  # open() made it
        return self._job.process(batch)

    def batch_metrics(self) -> list[tuple[str, float, dict[str, str]]]:
        return self._job.stats.metrics() if self._job is not None else []

    def close(self) -> dict[str, Any]:
        job, self._job, self._loaded = self._job, None, None
        assert job is not None  # open() made it
        return job.close()


@register
class DownloadStage(Stage):
    name = "download"
    config_model = DownloadConfig
    inputs = ()
    steps = (FetchStep,)
    table_step = "fetch"

    @classmethod
    def check(cls, config: Any) -> None:
        from curation.stages.download.checks import check_config

        check_config(config.download)

    @classmethod
    def preflight(cls, config: Any) -> list[str]:
        """The checks of :meth:`check`, then every URL list must hold at least one URL.

        Costs a Parquet footer or the first lines of each file, not a read of the lists.
        """
        problems = super().preflight(config)
        if problems:
            return problems
        from curation.download.lists import file_format, list_files

        cfg = config.download.input
        for path in list_files(cfg.paths):
            try:
                if not _has_rows(path, file_format(path, cfg.format)):
                    problems.append(f"download.input.paths: URL list '{path}' is empty (no rows)")
            except (OSError, ValueError) as err:  # ValueError: pyarrow's ArrowInvalid, a corrupt Parquet file
                problems.append(f"download.input.paths: URL list '{path}' cannot be read: {err}")
        return problems


def _has_rows(path: str, fmt: str) -> bool:
    """Whether a URL list has a data row: the Parquet footer, or the first non-blank lines of text."""
    import fsspec

    if fmt == "parquet":
        import pyarrow.parquet as pq

        with fsspec.open(path, "rb") as f:
            return pq.ParquetFile(f).metadata.num_rows > 0
    needed = 2 if fmt in ("csv", "tsv") else 1  # a header line, then a row
    with fsspec.open(path, "rb", compression="infer") as f:
        for line in f:  # stops at the first row: blank lines before it are skipped
            needed -= bool(line.strip())
            if needed == 0:
                return True
    return False
