import pyarrow as pa
import pytest

from curation.download.textlists import UnreadableList, parse_text

CSV = b'url,caption,id\nhttp://x/0,"a, b",007\nhttp://x/1,NA,\n"http://x/2","two\nlines",9\n\nhttp://x/3,,10\n'
JSONL = (
    b'{"url": "http://x/0", "n": 1, "when": "2024-01-02"}\n{"url": "http://x/1", "n": null}\n\n'
    b'{"url": "http://x/2", "n": 2.5, "tags": ["a"]}\n'
)


@pytest.mark.parametrize(
    "fmt, clean, bad_line, at, position",
    [  # inserted before line ``at`` (0-based)
        ("csv", CSV, b"http://x/9,too,many,fields\n", 3, 2),
        ("csv", CSV, b"http://x/9,\xff,1\n", 7, 4),  # after the last record
        ("csv", CSV, b"http://x/9,\xff,1\n", 6, 3),  # after a blank line
        ("csv", CSV.replace(b"\n", b"\r\n"), b"http://x/9,a,b,c\r\n", 3, 2),  # CRLF, a value spanning lines after it
        ("jsonl", JSONL.replace(b"\n", b"\r\n"), b"{bad\r\n", 1, 1),
        ("tsv", CSV.replace(b",", b"\t").replace(b'"a\t b"', b"a, b"), b"http://x/9\t\xff\t1\n", 2, 1),
        ("jsonl", JSONL, b'{"url": "http://x/9",\n', 2, 2),
        ("jsonl", JSONL, b'"just a string"\n', 0, 0),
        ("txt", b"http://x/0\n\nhttp://x/1\n", b"http://\xff/9\n", 1, 1),
    ],
)
def test_a_bad_line_costs_one_null_row_and_changes_nothing_else(fmt, clean, bad_line, at, position):
    expected = parse_text(clean, fmt, "url")
    assert expected.bad == {}
    lines = clean.splitlines(keepends=True)
    broken = parse_text(b"".join(lines[:at] + [bad_line] + lines[at:]), fmt, "url")
    assert broken.bad.keys() == {position}
    assert broken.bad[position].startswith(f"line {at + 1}: ")
    table = broken.table
    assert table.schema == expected.table.schema  # the good rows are typed as in a clean file
    kept = table.take([i for i in range(table.num_rows) if i != position])
    assert kept.equals(expected.table)
    assert all(value is None for value in table.slice(position, 1).to_pylist()[0].values())


def test_reasons():
    data = b'url,caption\nhttp://x/0,a\nhttp://x/1\nhttp://x/2,b,c\nhttp://x/3,\xe9\n"http://x/4,unclosed\n'
    assert parse_text(data, "csv", "url").bad == {
        1: "line 3: 1 fields, expected 2",
        2: "line 4: 3 fields, expected 2",
        3: "line 5: not UTF-8",
        4: "line 6: 1 fields, expected 2",
    }
    lines = b'{"url": "a"}\n[1]\n{"url": \xff}\n{"url": "b" "c"}\n' + b"[" * 100_000 + b"\n"
    assert parse_text(lines, "jsonl", "url").bad == {
        1: "line 2: not a JSON object",
        2: "line 3: not UTF-8",
        3: "line 4: invalid JSON (Expecting ',' delimiter at column 13)",
        4: "line 5: invalid JSON (nested too deeply)",
    }


def test_jsonl_column_changing_type_is_kept_as_json_text():
    parsed = parse_text(
        b'{"url": "a", "id": 1}\n{"url": "b", "id": "x"}\n{"url": "c", "id": [1]}\nbad\n', "jsonl", "url"
    )
    assert parsed.table.to_pylist() == [
        {"url": "a", "id": "1"},
        {"url": "b", "id": "x"},
        {"url": "c", "id": "[1]"},
        {"url": None, "id": None},
    ]
    assert parsed.bad == {3: "line 4: invalid JSON (Expecting value at column 1)"}


def test_every_line_bad_still_has_a_url_column():
    parsed = parse_text(b"nope\n[]\n", "jsonl", "url")
    assert parsed.table.to_pylist() == [{"url": None}, {"url": None}]
    assert parsed.table.schema.field("url").type == pa.string()


def test_a_csv_header_that_is_not_utf8_makes_the_file_unreadable():
    with pytest.raises(UnreadableList, match="header is not UTF-8"):
        parse_text(b"u\xffrl\nhttp://x/0\n", "csv", "url")


def test_bad_json_lines_found_in_blocks_arrow_bisects():
    lines = [b'{"url": "http://x/%d", "n": %d}' % (i, i) for i in range(10_000)]
    broken = {3: b'{"url": ', 4100: b"[4100]", 9_999: b'{"url": "\xff"}'}
    data = b"\n".join(broken.get(i, line) for i, line in enumerate(lines)) + b"\n"
    parsed = parse_text(data, "jsonl", "url")
    assert sorted(parsed.bad) == sorted(broken)
    assert parsed.bad[4100] == "line 4101: not a JSON object"
    clean = parse_text(b"\n".join(line for i, line in enumerate(lines) if i not in broken) + b"\n", "jsonl", "url")
    assert parsed.table.filter(parsed.table.column("url").is_valid()).equals(clean.table)


def test_a_type_change_far_from_the_bad_line_keeps_every_good_row():
    lines = [b'{"url": "http://x/%d", "n": %d}' % (i, i) for i in range(6_000)]
    lines[5_000] = b'{"url": "http://x/5000", "n": "five thousand"}'
    lines[10] = b"{oops"
    parsed = parse_text(b"\n".join(lines) + b"\n", "jsonl", "url")
    assert parsed.bad == {10: "line 11: invalid JSON (Expecting property name enclosed in double quotes at column 2)"}
    assert parsed.table.column("n").to_pylist()[4_999:5_001] == ["4999", "five thousand"]
    assert parsed.table.num_rows == 6_000


def test_a_json_string_that_is_not_utf8_is_a_bad_line():
    # Arrow's JSON reader keeps such bytes in its strings without complaint: the table must be validated.
    parsed = parse_text(b'{"url": "http://x/0"}\n{"url": "http://x/\xff"}\n', "jsonl", "url")
    assert parsed.bad == {1: "line 2: not UTF-8"}
    assert parsed.table.column("url").to_pylist() == ["http://x/0", None]
