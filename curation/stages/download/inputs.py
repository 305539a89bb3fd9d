"""The download stage's input: URL lists (read by :mod:`curation.download.lists`) planned into partitions.

The input is the concatenation of its files in sorted order, rows in file
order, split into partitions of ``partition_size`` rows. The plan (files,
row counts, sizes) is written once into the step directory and reused by
every later run, so partitions and sample keys never move.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

if TYPE_CHECKING:
    import numpy as np

from curation.atomic import read_json, write_json
from curation.download.lists import READ_ERRORS, file_format, list_files, parquet_urls, read_file
from curation.download.textlists import ParsedList
from curation.errors import ConfigError, PartitionError

log = logging.getLogger("curation")

PLAN_VERSION = 1


def describe(path: str, fmt: str, url_column: str, with_urls: bool) -> tuple[int, dict[str, str], Any, int]:
    """Rows, column types, (when asked) the URL column, and the unparseable rows of a list.

    Parquet: its footer (and that column) only. A file that cannot be read is a
    ConfigError naming it.
    """
    try:
        return _describe(path, fmt, url_column, with_urls)
    except PartitionError as err:
        raise ConfigError(f"download.input.paths: {err}") from None
    except READ_ERRORS as err:
        raise ConfigError(f"download.input.paths: {path}: cannot read as {fmt}: {type(err).__name__}: {err}") from None


def _describe(path: str, fmt: str, url_column: str, with_urls: bool) -> tuple[int, dict[str, str], Any, int]:
    if fmt == "parquet":
        import fsspec
        import pyarrow.parquet as pq

        with fsspec.open(path, "rb") as f:
            meta = pq.ParquetFile(f)
            schema, rows = meta.schema_arrow, meta.metadata.num_rows
            table = meta.read(columns=[url_column]) if with_urls and url_column in schema.names else None
        if url_column in schema.names and not _castable_to_string(schema.field(url_column).type):
            raise ConfigError(
                f"download.input.url_column: '{url_column}' of {path} is a "
                f"{schema.field(url_column).type} column, not text"
            )
        types = {f.name: str(f.type) for f in schema}
        parsed = parquet_urls(table, url_column) if table is not None else None
    else:
        parsed = read_file(path, fmt, url_column)
        rows, types = parsed.table.num_rows, {f.name: str(f.type) for f in parsed.table.schema}
    bad = len(parsed.bad) if parsed is not None else 0
    if not with_urls:
        return rows, types, None, bad
    if url_column not in types:
        raise ConfigError(f"download.input.url_column: '{url_column}' is not a column of {path}")
    assert parsed is not None  # read whenever the column exists
    return rows, types, parsed.table.column(url_column).cast(pa.string()), bad


def _castable_to_string(kind: pa.DataType) -> bool:
    return not (pa.types.is_nested(kind) or pa.types.is_dictionary(kind))


def conflicting_columns(types: list[dict[str, str]]) -> list[str]:
    """Columns whose type differs between files (all-null columns agree with anything)."""
    seen: dict[str, set[str]] = {}
    for file_types in types:
        for name, kind in file_types.items():
            if kind != "null":
                seen.setdefault(name, set()).add(kind)
    return sorted(name for name, kinds in seen.items() if len(kinds) > 1)


def file_size(path: str) -> int:
    import fsspec

    fs, root = fsspec.core.url_to_fs(path)
    return int(fs.size(root))


def plan_key(cfg) -> dict[str, Any]:
    """What a plan depends on: a plan made from other inputs is refused."""
    return {
        "paths": list(cfg.paths),
        "format": cfg.format,
        "partition_size": cfg.partition_size,
        "url_column": cfg.url_column,
        "duplicate_urls": cfg.duplicate_urls,
    }


def make_plan(cfg, duplicates_path: Path | None = None) -> dict[str, Any]:
    """The plan of the inputs; with ``duplicate_urls: global``, repeated URLs go to ``duplicates_path``."""
    files: list[dict[str, Any]] = []
    types: list[dict[str, str]] = []
    urls: list[Any] = []  # Arrow chunks
    scan_urls = cfg.duplicate_urls == "global" and duplicates_path is not None
    for path in list_files(cfg.paths):
        fmt = file_format(path, cfg.format)
        rows, file_types, column, bad = describe(path, fmt, cfg.url_column, scan_urls)
        if bad:
            log.warning("download input %s: %d unparseable lines, kept as filtered_url:unparseable rows", path, bad)
        files.append({"path": path, "format": fmt, "rows": rows, "size": file_size(path), "unparseable": bad})
        types.append(file_types)
        urls += column.chunks if column is not None else []
    rows = sum(f["rows"] for f in files)
    repeated = None
    if scan_urls and duplicates_path is not None:
        from curation.stages.download import duplicates

        pairs = duplicates.repeated_rows(pa.chunked_array(urls, pa.string()))
        duplicates.save(duplicates_path, pairs)
        repeated = len(pairs)
    # Stored as strings in every partition, so that all partition tables share one schema.
    return {
        "version": PLAN_VERSION,
        "input": plan_key(cfg),
        "files": files,
        "rows": rows,
        "partitions": -(-rows // cfg.partition_size),
        "string_columns": conflicting_columns(types),
        "repeated_urls": repeated,
    }


def load_or_make_plan(path: Path, cfg) -> dict[str, Any]:
    """The stored plan, or a new one written atomically. Refuses a plan of other inputs."""
    if path.exists():
        plan = read_json(path)
        if plan.get("version") != PLAN_VERSION or plan.get("input") != plan_key(cfg):
            raise ConfigError(
                f"download.input: {path} was planned from other inputs ({plan.get('input')}); "
                "use a new run_dir, or delete that stage directory to start over"
            )
        return plan
    plan = make_plan(cfg, duplicates_path(path))
    write_json(path, plan)  # last: a plan file means the planning finished
    return plan


def duplicates_path(plan_path: Path) -> Path:
    return Path(plan_path).with_name("url_duplicates.npy")


def partition_rows(plan: dict[str, Any], partition: int) -> int:
    size = plan["input"]["partition_size"]
    return max(0, min(size, plan["rows"] - partition * size))


def partition_slices(plan: dict[str, Any], partition: int) -> list[tuple[int, int, int]]:
    """(file index, first row, end row) of each file piece of a partition, in order."""
    size = plan["input"]["partition_size"]
    start, stop = partition * size, partition * size + partition_rows(plan, partition)
    out, offset = [], 0
    for i, f in enumerate(plan["files"]):
        lo, hi = max(start, offset), min(stop, offset + f["rows"])
        if lo < hi:
            out.append((i, lo - offset, hi - offset))
        offset += f["rows"]
    return out


def check_unchanged(plan: dict[str, Any], key: str = "download.input.paths") -> None:
    """The planned files still exist with their sizes (a changed list would move keys)."""
    for f in plan["files"]:
        try:
            size = file_size(f["path"])
        except FileNotFoundError:
            raise ConfigError(f"{key}: planned input file {f['path']} has disappeared") from None
        if size != f["size"]:
            raise ConfigError(
                f"{key}: input file {f['path']} changed since it was planned "
                f"({f['size']} -> {size} bytes); use a new run_dir"
            )


def columns_of(path: str, fmt: str, url_column: str) -> list[str]:
    """Column names of a list, read from its header only; ConfigError when the file cannot be read."""
    try:
        return _columns_of(path, fmt, url_column)
    except READ_ERRORS as err:
        raise ConfigError(f"download.input.paths: {path}: cannot read as {fmt}: {type(err).__name__}: {err}") from None


def _columns_of(path: str, fmt: str, url_column: str) -> list[str]:
    import fsspec

    if fmt == "txt":
        return [url_column]
    if fmt == "parquet":
        import pyarrow.parquet as pq

        with fsspec.open(path, "rb") as f:
            return list(pq.ParquetFile(f).schema_arrow.names)
    with fsspec.open(path, "rb", compression="infer") as f:
        first = f.readline()
    if fmt == "jsonl":
        import json

        try:  # a broken first line is one bad row, found when the list is read
            names = json.loads(first.decode("utf-8")) if first.strip() else []
        except (ValueError, RecursionError):
            return []
        return list(names) if isinstance(names, dict) else []
    try:
        header = first.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"download.input.paths: {path}: its header is not UTF-8") from None
    return next(csv.reader([header], delimiter="\t" if fmt == "tsv" else ","), [])


class PartitionReader:
    """Rows of partitions, keeping the last file read (neighbouring partitions share files)."""

    def __init__(
        self, plan: dict[str, Any], url_column: str, columns: list[str] | None, duplicates_file: Path | None = None
    ):
        self.plan = plan
        self.url_column = url_column
        self.columns = columns
        self._cached: tuple[int, ParsedList] | None = None
        self._bad: tuple[int, dict[int, str]] | None = None
        self._duplicates_file = duplicates_file
        self._pairs: np.ndarray | None = None

    def unparseable(self, partition: int) -> dict[int, str]:
        """Rows of the partition that could not be parsed -> ``line N: reason`` (N counts from 1 in its file)."""
        if self._bad is None or self._bad[0] != partition:
            self.read(partition)
        assert self._bad is not None  # read() sets it
        return self._bad[1]

    def repeated(self, partition: int) -> dict[int, str]:
        """Rows of the partition whose URL appeared earlier in the input -> key of that first row."""
        if self.plan.get("repeated_urls") is None or self._duplicates_file is None:
            return {}
        from curation import tables
        from curation.stages.download.duplicates import in_range

        if self._pairs is None:
            import numpy as np

            self._pairs = np.load(self._duplicates_file, mmap_mode="r", allow_pickle=False)
        size = self.plan["input"]["partition_size"]
        start = partition * size
        pairs = in_range(self._pairs, start, start + size)
        return {int(row) - start: tables.sample_key(int(first) // size, int(first) % size) for row, first in pairs}

    def _file(self, index: int) -> ParsedList:
        if self._cached is None or self._cached[0] != index:
            f = self.plan["files"][index]
            self._cached = (index, read_file(f["path"], f["format"], self.url_column))
        return self._cached[1]

    def read(self, partition: int) -> pa.Table:
        """``url`` (string) then the carried columns, one row per input row of the partition."""
        pieces, offset = [], 0
        bad: dict[int, str] = {}
        for index, start, stop in partition_slices(self.plan, partition):
            parsed = self._file(index)
            table, path = parsed.table, self.plan["files"][index]["path"]
            if table.num_rows != self.plan["files"][index]["rows"]:
                raise PartitionError(f"{path}: {table.num_rows} rows, planned {self.plan['files'][index]['rows']}")
            pieces.append(self._select(table.slice(start, stop - start), path))
            bad.update(
                (offset + row - start, f"{path.rsplit('/', 1)[-1]} {reason}")
                for row, reason in parsed.bad.items()
                if start <= row < stop
            )
            offset += stop - start
        self._bad = (partition, bad)
        if not pieces:
            return pa.table({"url": pa.array([], pa.string())})
        return pa.concat_tables(pieces, promote_options="permissive")

    def _select(self, table: pa.Table, path: str) -> pa.Table:
        names = table.column_names
        if self.url_column not in names:
            raise PartitionError(f"{path}: no URL column '{self.url_column}' (columns: {names[:20]})")
        carried = self.columns if self.columns is not None else [n for n in names if n != self.url_column]
        missing = [c for c in carried if c not in names]
        if missing:
            raise PartitionError(f"{path}: carried columns {missing} are missing")
        from curation.stages.download.rows import carried_name

        strings = {self.url_column, *self.plan.get("string_columns", [])}
        columns = [
            _as_string(table.column(c)) if c in strings else table.column(c) for c in [self.url_column, *carried]
        ]
        return pa.table(columns, names=["url"] + [carried_name(c) for c in carried])


def _as_string(column: pa.ChunkedArray) -> pa.ChunkedArray:
    return column if column.type == pa.string() else column.cast(pa.string())
