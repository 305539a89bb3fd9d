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
    # surrogateescape keeps every byte and the line boundaries of a strict decode.
    text = data.decode("utf-8", "surrogateescape")
    urls, bad = [], {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        if _not_utf8(line):
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
    reader = csv.reader(io.StringIO(data.decode("utf-8", "surrogateescape"), newline=""), delimiter=delimiter)
    header = next(reader, [])
    if any(_not_utf8(name) for name in header):
        raise UnreadableList("its header is not UTF-8")
    good = io.StringIO()
    writer = csv.writer(good, delimiter=delimiter, lineterminator="\n")
    writer.writerow(header)
    rows, bad, kept, line = [], {}, 0, reader.line_num + 1
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
                bad[len(rows)] = f"line {line}: {reason}"
                rows.append(None)
            else:
                rows.append(kept)
                kept += 1
                writer.writerow(record)
        line = reader.line_num + 1
    try:
        table = _arrow_csv(good.getvalue().encode("utf-8"), delimiter)
    except pa.ArrowInvalid as err:
        raise UnreadableList(f"its valid rows do not parse either ({err})") from None
    return ParsedList(_place(table, rows, url_column), bad)


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
    good, objects, rows, bad = [], [], [], {}
    for number, raw in enumerate(data.split(b"\n"), 1):
        if not raw.strip():
            continue
        reason, value = _json_problem(raw)
        if reason:
            bad[len(rows)] = f"line {number}: {reason}"
            rows.append(None)
        else:
            rows.append(len(good))
            good.append(raw)
            objects.append(value)
    try:
        table = pj.read_json(io.BytesIO(b"\n".join(good))) if good else pa.table({})
    except pa.ArrowInvalid:  # a column whose type changes between lines: built from the Python values
        table = _objects_table(objects)
    return ParsedList(_place(table, rows, url_column), bad)


def _json_problem(raw: bytes) -> tuple[str | None, object]:
    try:
        value = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return "not UTF-8", None
    except json.JSONDecodeError as err:
        return f"invalid JSON ({err.msg} at column {err.colno})", None
    except RecursionError:
        return "invalid JSON (nested too deeply)", None
    if not isinstance(value, dict):
        return "not a JSON object", None
    return None, value


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


def _place(table: pa.Table, rows: list[int | None], url_column: str) -> pa.Table:
    """``table``'s rows at their input positions; None positions become all-null rows."""
    if url_column not in table.column_names:
        table = table.append_column(url_column, pa.nulls(table.num_rows, pa.string()))
    return table.take(pa.array(rows, pa.int64()))
