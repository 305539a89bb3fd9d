"""URL lists: Parquet, CSV/TSV, JSONL or plain text, local or through fsspec: finding and reading them.

Used by the download stage's input plan (:mod:`curation.stages.download.inputs`)
and by the client that fetches small lists outside the stage.
"""

from __future__ import annotations

import lzma
from pathlib import Path

import pyarrow as pa

from curation.download.textlists import ParsedList, UnreadableList, parse_text
from curation.errors import ConfigError, PartitionError

# What reading a broken or vanished file raises (bad gzip/bz2 streams are OSErrors; xz has its own).
READ_ERRORS = (OSError, EOFError, lzma.LZMAError, pa.ArrowInvalid)

COMPRESSIONS = (".gz", ".bz2", ".zst", ".xz")
EXTENSIONS = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".txt": "txt",
}


def list_files(paths: list[str], key: str = "download.input.paths") -> list[str]:
    """Files named by paths, directories (searched recursively) and globs: sorted, unique."""
    import fsspec

    found: set[str] = set()
    for path in paths:
        fs, root = fsspec.core.url_to_fs(path)
        if any(ch in root for ch in "*?["):
            matches = [m for m in fs.glob(root) if fs.isfile(m)]
        elif fs.isdir(root):
            matches = [m for m in fs.find(root) if _extension(m) in EXTENSIONS]
        elif fs.exists(root):
            matches = [root]
        else:
            raise ConfigError(f"{key}: '{path}' does not exist")
        if not matches:
            raise ConfigError(f"{key}: '{path}' matches no URL-list file")
        found.update(_qualify(fs, m) for m in matches)
    return sorted(found)


def _qualify(fs, path: str) -> str:
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return path if protocol in ("file", "local") else fs.unstrip_protocol(path)


def _extension(path: str) -> str:
    name = path.lower()
    for suffix in COMPRESSIONS:
        name = name.removesuffix(suffix)
    return Path(name).suffix


def file_format(path: str, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    found = EXTENSIONS.get(_extension(path))
    if found is None:
        raise ConfigError(
            f"download.input.format: cannot tell the format of '{path}' from its extension; set it explicitly"
        )
    return found


def read_file(path: str, fmt: str, url_column: str) -> ParsedList:
    """The whole list as an Arrow table, one row per input row, unparseable ones included (all null).

    CSV/TSV/text values stay strings (ids keep leading zeros). PartitionError
    when the file cannot be read or parsed at all.
    """
    import fsspec

    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            with fsspec.open(path, "rb") as f:
                return parquet_urls(pq.read_table(f), url_column)
        with fsspec.open(path, "rb", compression="infer") as f:
            data = f.read()
        return parse_text(data, fmt, url_column)
    except (*READ_ERRORS, UnreadableList) as err:
        raise PartitionError(f"{path}: cannot read as {fmt}: {type(err).__name__}: {err}") from None


def parquet_urls(table: pa.Table, url_column: str) -> ParsedList:
    """A Parquet list; a binary URL column is decoded, each value that is not UTF-8 costing one row."""
    if url_column not in table.column_names or not pa.types.is_binary(table.schema.field(url_column).type):
        return ParsedList(table)
    urls, bad = [], {}
    for row, value in enumerate(table.column(url_column).to_pylist()):
        try:
            urls.append(None if value is None else value.decode("utf-8"))
        except UnicodeDecodeError:
            bad[row] = f"row {row + 1}: URL is not UTF-8"
            urls.append(None)
    index = table.column_names.index(url_column)
    return ParsedList(table.set_column(index, url_column, pa.array(urls, pa.string())), bad)
