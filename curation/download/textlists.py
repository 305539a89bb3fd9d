"""Text URL lists (CSV/TSV, JSON Lines, plain text) to Arrow, a bad line costing one row.

A clean file is parsed by Arrow in one call. When that fails, the file is
split into records in Python: each record that cannot be parsed (not UTF-8,
wrong number of CSV fields, invalid JSON, not a JSON object) keeps its place
as an all-null row, reported in ``ParsedList.bad`` with its line number, and
the good records are parsed by Arrow as before, so their values get the same
types as in a clean file. Either way one input line (or CSV record) is one
row, which keeps sample keys stable.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field

import pyarrow as pa


@dataclass
class ParsedList:
    """A list's rows; ``bad`` maps the row index of each unparseable record to ``line N: reason``."""

    table: pa.Table
    bad: dict[int, str] = field(default_factory=dict)


class UnreadableList(ValueError):
    """The file as a whole cannot be parsed (e.g. its CSV header is not UTF-8)."""


def parse_text(data: bytes, fmt: str, url_column: str) -> ParsedList:
    if fmt == "txt":
        return _txt(data, url_column)
    if fmt == "jsonl":
        return _jsonl(data, url_column)
    return _csv(data, "\t" if fmt == "tsv" else ",", url_column)


def _txt(data: bytes, url_column: str) -> ParsedList:
    try:
        text, checked = data.decode("utf-8"), True
    except UnicodeDecodeError:
        # surrogateescape keeps every byte and the line boundaries of a strict decode.
        text, checked = data.decode("utf-8", "surrogateescape"), False
    urls, bad = [], {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        if not checked and _not_utf8(line):
            bad[len(urls)] = f"line {number}: not UTF-8"
            line = None
        urls.append(line)
    return ParsedList(pa.table({url_column: pa.array(urls, pa.string())}), bad)


def _not_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from surrogateescape: an undecodable byte
        return True
    return False


def _csv(data: bytes, delimiter: str, url_column: str) -> ParsedList:
    try:
        return ParsedList(_arrow_csv(data, delimiter))
    except (pa.ArrowInvalid, UnicodeDecodeError):
        pass
    # Lines decoded one at a time (surrogateescape keeps undecodable bytes, found per record below).
    reader = csv.reader((line.decode("utf-8", "surrogateescape") for line in io.BytesIO(data)),
                        delimiter=delimiter)
    header = next(reader, [])
    if any(_not_utf8(name) for name in header):
        raise UnreadableList("its header is not UTF-8")
    good, places = _Chunks(delimiter), _Places()
    good.write(header)
    line = reader.line_num + 1
    while True:
        try:
            record = next(reader)
            reason = _csv_problem(record, len(header))
        except StopIteration:
            break
        except csv.Error as err:
            record, reason = None, f"CSV error ({err})"
        if record != []:  # a blank line is skipped, as Arrow does
            if reason:
                places.drop(f"line {line}: {reason}")
            else:
                places.keep()
                good.write(record)
        line = reader.line_num + 1
    try:
        table = _arrow_csv(good.value(), delimiter)
    except pa.ArrowInvalid as err:
        raise UnreadableList(f"its valid rows do not parse either ({err})") from None
    return ParsedList(_place(table, places, url_column), places.bad)


class _Chunks:
    """CSV records re-encoded as UTF-8 bytes, in chunks (a text buffer holds 4 bytes a character)."""

    def __init__(self, delimiter: str, records: int = 65536):
        self._buffer = io.StringIO()
        self._writer = csv.writer(self._buffer, delimiter=delimiter, lineterminator="\n")
        self._chunks: list[bytes] = []
        self._records, self._limit = 0, records

    def write(self, record: list[str]) -> None:
        self._writer.writerow(record)
        self._records += 1
        if self._records % self._limit == 0:
            self._flush()

    def _flush(self) -> None:
        self._chunks.append(self._buffer.getvalue().encode("utf-8"))
        self._buffer.seek(0)
        self._buffer.truncate()

    def value(self) -> bytes:
        self._flush()
        return b"".join(self._chunks)


class _Places:
    """Where each record goes: kept ones to their row of the parsed good records, bad ones to null."""

    def __init__(self):
        self.count = 0
        self.bad: dict[int, str] = {}

    def keep(self) -> None:
        self.count += 1

    def drop(self, reason: str) -> None:
        self.bad[self.count] = reason
        self.count += 1

    def indices(self) -> pa.Array:
        """(count,) int64: row of the good table, null for a bad record."""
        import numpy as np

        mask = np.zeros(self.count, dtype=bool)
        mask[list(self.bad)] = True
        return pa.array(np.cumsum(~mask) - 1, pa.int64(), mask=mask)


def _csv_problem(record: list[str], fields: int) -> str | None:
    if record and len(record) != fields:
        return f"{len(record)} fields, expected {fields}"
    if any(_not_utf8(value) for value in record):
        return "not UTF-8"
    return None


def _arrow_csv(data: bytes, delimiter: str) -> pa.Table:
    """CSV with every column a string (ids keep leading zeros)."""
    import pyarrow.csv as pc

    header = next(csv.reader(io.StringIO(data.decode("utf-8").split("\n", 1)[0]), delimiter=delimiter), [])
    return pc.read_csv(
        io.BytesIO(data),
        parse_options=pc.ParseOptions(delimiter=delimiter, newlines_in_values=True),
        convert_options=pc.ConvertOptions(column_types={name: pa.string() for name in header},
                                          strings_can_be_null=True),
    )


def _jsonl(data: bytes, url_column: str) -> ParsedList:
    import pyarrow.json as pj

    try:
        return ParsedList(pj.read_json(io.BytesIO(data)))
    except (pa.ArrowInvalid, UnicodeDecodeError):
        pass
    places, cuts, offset = _Places(), [], 0
    for number, raw in enumerate(io.BytesIO(data), 1):
        start, offset = offset, offset + len(raw)
        if not raw.strip():
            continue
        reason = _json_problem(raw)
        if reason:
            places.drop(f"line {number}: {reason}")
            cuts.append((start, offset))
        else:
            places.keep()
    good = _without(data, cuts)
    if len(places.bad) == places.count:
        table = pa.table({})
    else:
        try:
            table = pj.read_json(io.BytesIO(good))
        except pa.ArrowInvalid:  # a column whose type changes between lines: built from the Python values
            table = _objects_table([json.loads(raw) for raw in io.BytesIO(good) if raw.strip()])
    return ParsedList(_place(table, places, url_column), places.bad)


def _without(data: bytes, cuts: list[tuple[int, int]]) -> bytes:
    """``data`` less the byte ranges ``cuts`` (sorted, disjoint)."""
    pieces, last = [], 0
    for start, stop in cuts:
        pieces.append(data[last:start])
        last = stop
    pieces.append(data[last:])
    return b"".join(pieces)


def _json_problem(raw: bytes) -> str | None:
    try:
        value = json.loads(raw.rstrip(b"\r\n").decode("utf-8"))
    except UnicodeDecodeError:
        return "not UTF-8"
    except json.JSONDecodeError as err:
        return f"invalid JSON ({err.msg} at column {err.colno})"
    except RecursionError:
        return "invalid JSON (nested too deeply)"
    return None if isinstance(value, dict) else "not a JSON object"


def _objects_table(objects: list[dict]) -> pa.Table:
    """A table of JSON objects; a column whose values do not share one type is stored as JSON text."""
    names = list(dict.fromkeys(name for obj in objects for name in obj))
    columns = {}
    for name in names:
        values = [obj.get(name) for obj in objects]
        try:
            columns[name] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
            columns[name] = pa.array([v if v is None or isinstance(v, str) else json.dumps(v) for v in values],
                                     pa.string())
    return pa.table(columns)


def _place(table: pa.Table, places: _Places, url_column: str) -> pa.Table:
    """``table``'s rows at their input positions, an all-null row for each bad record."""
    if url_column not in table.column_names:
        table = table.append_column(url_column, pa.nulls(table.num_rows, pa.string()))
    return table.take(places.indices())
