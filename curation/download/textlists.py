"""Text URL lists (CSV/TSV, JSON Lines, plain text) to Arrow, a bad line costing one row.

A clean file is parsed by Arrow in one call. When that fails, the records
that cannot be parsed (not UTF-8, a wrong number of CSV fields, invalid JSON,
not a JSON object) are found (CSV: by Python's reader; JSON Lines: by
bisecting with Arrow), cut out of the bytes, and the rest is parsed by Arrow
in one call as before, so the good values get the same types as in a clean
file. Each bad record keeps its place as an all-null row, reported in
``ParsedList.bad`` with its line number. Either way one input line (one CSV
record) is one row, which keeps sample keys stable; blank lines are skipped,
as Arrow skips them.
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
    urls: list[str | None] = []
    bad: dict[int, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        if not checked and _not_utf8(line):
            bad[len(urls)] = f"line {number}: not UTF-8"
            urls.append(None)
        else:
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
    undecodable: list[int] = []
    reader = csv.reader(_decoded_lines(data, undecodable), delimiter=delimiter)
    header = next(reader, [])
    if undecodable:
        raise UnreadableList("its header is not UTF-8")
    places, spans = _Places(), []  # spans: (first, last) line of each bad record
    while True:
        first = reader.line_num + 1
        try:
            record = next(reader)
            reason = f"{len(record)} fields, expected {len(header)}" if len(record) not in (0, len(header)) else None
        except StopIteration:
            break
        except csv.Error as err:
            record, reason = None, f"CSV error ({err})"
        if record == []:  # a blank line is skipped, as Arrow does
            continue
        if reason is None and undecodable and undecodable[-1] >= first:
            reason = "not UTF-8"
        if reason:
            places.drop(f"line {first}: {reason}")
            spans.append((first, reader.line_num))
        else:
            places.keep()
    starts, stops = _line_bounds(data) if spans else ((), ())
    good = _without(data, [(starts[first - 1], stops[last - 1]) for first, last in spans])
    table = _good_rows(lambda rows: _arrow_csv(rows, delimiter), good, places)
    return ParsedList(_place(table, places, url_column), places.bad)


def _decoded_lines(data: bytes, undecodable: list[int]):
    """Lines of ``data`` (split at ``\\n``) as text; the numbers of those that are not UTF-8 go to ``undecodable``.

    Such a line is decoded with surrogateescape, so that the CSV reader still
    sees its fields and line ends.
    """
    for number, raw in enumerate(io.BytesIO(data), 1):
        if raw.isascii():
            yield raw.decode("ascii")
            continue
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError:
            undecodable.append(number)
            yield raw.decode("utf-8", "surrogateescape")


def _line_bounds(data: bytes):
    """(L,) int64 byte offsets where each line (split at ``\\n``, ends included) starts and stops."""
    import numpy as np

    ends = np.flatnonzero(np.frombuffer(data, np.uint8) == 10) + 1
    if not len(ends) or ends[-1] != len(data):
        ends = np.append(ends, len(data))
    return np.concatenate([[0], ends[:-1]]), ends


def _good_rows(parse, good: bytes, places: _Places) -> pa.Table:
    """The kept records, parsed by Arrow; UnreadableList when Arrow does not find them all."""
    try:
        table = parse(good)
    except (pa.ArrowInvalid, UnicodeDecodeError) as err:
        raise UnreadableList(f"its valid lines do not parse either ({err})") from None
    kept = places.count - len(places.bad)
    if table.num_rows != kept:  # records split differently by Python's csv and Arrow (bare CR line ends)
        raise UnreadableList(f"its valid lines parse into {table.num_rows} rows, not {kept}")
    return table


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


def _arrow_csv(data: bytes, delimiter: str) -> pa.Table:
    """CSV with every column a string (ids keep leading zeros)."""
    import pyarrow.csv as pc

    end = data.find(b"\n")
    header = next(csv.reader([data[: end if end >= 0 else len(data)].decode("utf-8")], delimiter=delimiter), [])
    return pc.read_csv(
        io.BytesIO(data),
        parse_options=pc.ParseOptions(delimiter=delimiter, newlines_in_values=True),
        convert_options=pc.ConvertOptions(
            column_types={name: pa.string() for name in header}, strings_can_be_null=True
        ),
    )


def _jsonl(data: bytes, url_column: str) -> ParsedList:
    try:
        return ParsedList(_read_json(data))
    except (pa.ArrowInvalid, UnicodeDecodeError):
        pass
    starts, stops = _line_bounds(data)
    records = _not_blank(data, starts)
    starts, stops = starts[records], stops[records]
    bad = _bad_json_lines(data, starts, stops)
    places = _Places()
    places.count = len(starts)
    places.bad = {i: f"line {records[i] + 1}: {bad[i]}" for i in sorted(bad)}
    good = _without(data, [(starts[i], stops[i]) for i in sorted(bad)])
    if len(bad) == len(starts):
        table = pa.table({})
    else:
        try:
            table = _good_rows(_read_json, good, places)
        except UnreadableList:  # a column whose type changes between lines: built from the Python values
            table = _objects_table([json.loads(raw) for raw in io.BytesIO(good) if raw.strip()])
    return ParsedList(_place(table, places, url_column), places.bad)


def _read_json(data: bytes) -> pa.Table:
    """JSON Lines by Arrow, whose reader leaves bytes that are not UTF-8 in its strings: checked here."""
    import pyarrow.json as pj

    table = pj.read_json(io.BytesIO(data))
    table.validate(full=True)  # ArrowInvalid on a string that is not UTF-8
    return table


def _not_blank(data: bytes, starts):
    """Indices of the lines (starting at ``starts``) with a byte other than JSON whitespace: Arrow's records."""
    import numpy as np

    if not data:
        return np.zeros(0, np.int64)
    not_space = np.ones(256, dtype=bool)
    not_space[list(b" \t\r\n")] = False
    return np.flatnonzero(np.logical_or.reduceat(not_space[np.frombuffer(data, np.uint8)], starts))


def _bad_json_lines(data: bytes, starts, stops, block: int = 4096, leaf: int = 256) -> dict[int, str]:
    """Lines that are not JSON objects -> why, found by bisecting with Arrow.

    The lines are cut into blocks of ``block`` lines. A block Arrow parses
    holds no bad line; a failing block is halved until it is at most ``leaf``
    lines, which are checked one by one in Python. A block failing on a column
    that changes type is checked line by line at once (halving would not end
    that failure). Bad lines in a tenth of the blocks cost about 1.5 Arrow
    passes over the file.
    """
    bad = {}
    blocks = [(lo, min(lo + block, len(starts))) for lo in range(0, len(starts), block)][::-1]
    while blocks:
        lo, hi = blocks.pop()
        if hi - lo > leaf:
            try:
                _read_json(data[starts[lo] : stops[hi - 1]])
                continue
            except (pa.ArrowInvalid, UnicodeDecodeError) as err:
                if "changed from" not in str(err):
                    blocks += [(lo + (hi - lo) // 2, hi), (lo, lo + (hi - lo) // 2)]
                    continue
        for i in range(lo, hi):
            reason = _json_problem(data[starts[i] : stops[i]])
            if reason:
                bad[i] = reason
    return bad


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
            columns[name] = pa.array(
                [v if v is None or isinstance(v, str) else json.dumps(v) for v in values], pa.string()
            )
    return pa.table(columns)


def _place(table: pa.Table, places: _Places, url_column: str) -> pa.Table:
    """``table``'s rows at their input positions, an all-null row for each bad record."""
    if url_column not in table.column_names:
        table = table.append_column(url_column, pa.nulls(table.num_rows, pa.string()))
    return table.take(places.indices())
