import gzip
import json

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.download.lists import list_files
from curation.errors import ConfigError, PartitionError
from curation.stages.download.config import InputConfig
from curation.stages.download.inputs import (
    PartitionReader,
    check_unchanged,
    columns_of,
    load_or_make_plan,
    partition_rows,
    partition_slices,
)


def _lists(root):
    """Five rows over four formats; sorted order: a.parquet, b.csv, c.jsonl.gz, d.txt."""
    pq.write_table(
        pa.table({"url": ["http://x/0", "http://x/1"], "caption": ["zero", "one"], "id": [10, 11]}), root / "a.parquet"
    )
    (root / "b.csv").write_text('url,caption,id\nhttp://x/2,"two, with comma",0012\n')
    with gzip.open(root / "c.jsonl.gz", "wt") as f:
        f.write(json.dumps({"url": "http://x/3", "caption": "three", "id": 13}) + "\n")
    (root / "d.txt").write_text("http://x/4\n\n")
    return root


def _config(root, **kw):
    return InputConfig(paths=[str(root)], partition_size=2, **kw)


def test_list_files_sorted_and_globs(tmp_path):
    _lists(tmp_path)
    names = [p.rsplit("/", 1)[1] for p in list_files([str(tmp_path)])]
    assert names == ["a.parquet", "b.csv", "c.jsonl.gz", "d.txt"]
    assert [p.rsplit("/", 1)[1] for p in list_files([str(tmp_path / "*.csv"), str(tmp_path / "a.parquet")])] == [
        "a.parquet",
        "b.csv",
    ]
    with pytest.raises(ConfigError, match="download.input.paths"):
        list_files([str(tmp_path / "missing")])


def test_plan_partitions_and_rows(tmp_path):
    _lists(tmp_path)
    plan = load_or_make_plan(tmp_path / "plan.json", _config(tmp_path))
    assert [f["rows"] for f in plan["files"]] == [2, 1, 1, 1]
    assert (plan["rows"], plan["partitions"]) == (5, 3)
    assert [partition_rows(plan, p) for p in range(3)] == [2, 2, 1]
    assert partition_slices(plan, 1) == [(1, 0, 1), (2, 0, 1)]
    reader = PartitionReader(plan, "url", None)
    rows = [reader.read(p).to_pylist() for p in range(3)]
    assert [r["url"] for part in rows for r in part] == [f"http://x/{i}" for i in range(5)]
    # CSV values stay strings; types of the other formats are promoted to one schema per partition.
    assert rows[1] == [
        {"url": "http://x/2", "caption": "two, with comma", "id": "0012"},
        {"url": "http://x/3", "caption": "three", "id": "13"},
    ]
    assert rows[2] == [{"url": "http://x/4"}]


def test_plan_is_reused_and_guarded(tmp_path):
    _lists(tmp_path)
    first = load_or_make_plan(tmp_path / "plan.json", _config(tmp_path))
    (tmp_path / "e.txt").write_text("http://x/5\n")  # a new file does not move existing keys
    assert load_or_make_plan(tmp_path / "plan.json", _config(tmp_path)) == first
    with pytest.raises(ConfigError, match="planned from other inputs"):
        load_or_make_plan(tmp_path / "plan.json", InputConfig(paths=[str(tmp_path)], partition_size=3))
    check_unchanged(first)
    (tmp_path / "d.txt").write_text("http://x/4\nhttp://x/44\n")
    with pytest.raises(ConfigError, match="changed since it was planned"):
        check_unchanged(first)


def test_selected_columns_and_renamed_collisions(tmp_path):
    pq.write_table(pa.table({"link": ["http://x/0"], "status": ["ok"], "caption": ["c"]}), tmp_path / "l.parquet")
    plan = load_or_make_plan(
        tmp_path / "plan.json", InputConfig(paths=[str(tmp_path / "l.parquet")], url_column="link")
    )
    assert PartitionReader(plan, "link", ["status"]).read(0).to_pylist() == [
        {"url": "http://x/0", "input_status": "ok"}
    ]
    with pytest.raises(PartitionError, match="no URL column 'url'"):
        PartitionReader(plan, "url", None).read(0)


def test_fsspec_urls():
    fs = fsspec.filesystem("memory")
    fs.pipe("/lists/urls.tsv", b"url\tcaption\nhttp://x/0\ta\thing\n".replace(b"a\thing", b"a thing"))
    cfg = InputConfig(paths=["memory://lists"], partition_size=10)
    plan = load_or_make_plan_in_memory(cfg)
    assert plan["files"][0]["path"] == "memory:///lists/urls.tsv"
    assert PartitionReader(plan, "url", None).read(0).to_pylist() == [{"url": "http://x/0", "caption": "a thing"}]


def load_or_make_plan_in_memory(cfg):
    from curation.stages.download.inputs import make_plan

    return make_plan(cfg)


def test_repeated_urls_over_the_whole_input(tmp_path):
    (tmp_path / "a.txt").write_text("http://x/0\nhttp://x/1\nhttp://x/0\n")
    (tmp_path / "b.txt").write_text("http://x/2\nhttp://x/1\nhttp://x/0\n")
    plan = load_or_make_plan(tmp_path / "step" / "plan.json", _config(tmp_path))
    assert plan["repeated_urls"] == 3
    reader = PartitionReader(plan, "url", None, tmp_path / "step" / "url_duplicates.npy")
    # Rows 2, 4, 5 repeat rows 0, 1, 0; partitions of 2 rows.
    assert [reader.repeated(p) for p in range(3)] == [{}, {0: "000000000000"}, {0: "000000000001", 1: "000000000000"}]
    local = load_or_make_plan(tmp_path / "other" / "plan.json", _config(tmp_path, duplicate_urls="partition"))
    assert local["repeated_urls"] is None and not (tmp_path / "other" / "url_duplicates.npy").exists()
    assert PartitionReader(local, "url", None, tmp_path / "other" / "url_duplicates.npy").repeated(2) == {}


def test_missing_url_column_is_a_config_error_when_planning(tmp_path):
    (tmp_path / "a.csv").write_text("link\nhttp://x/0\n")
    with pytest.raises(ConfigError, match="download.input.url_column: 'url' is not a column"):
        load_or_make_plan(tmp_path / "plan.json", _config(tmp_path))


BROKEN = {  # file -> (bytes, URLs in row order with None for each unparseable line, its reason)
    "a.txt": (
        b"http://x/0\n\xff\xfe/1\n\nhttp://x/2\n",
        ["http://x/0", None, "http://x/2"],
        {1: "a.txt line 2: not UTF-8"},
    ),
    "b.csv": (
        b'url,caption\nhttp://x/3,three\nhttp://x/4,four,extra\n"http://x/5","five,\nsplit"\n'
        b"http://x/6,\xe9t\xe9\nhttp://x/7\nhttp://x/8,NA\n",
        ["http://x/3", None, "http://x/5", None, None, "http://x/8"],
        {
            1: "b.csv line 3: 3 fields, expected 2",
            3: "b.csv line 6: not UTF-8",
            4: "b.csv line 7: 1 fields, expected 2",
        },
    ),
    "c.tsv": (
        b"url\tcaption\nhttp://x/9\tnine\nhttp://x/10\tten\tmore\n",
        ["http://x/9", None],
        {1: "c.tsv line 3: 3 fields, expected 2"},
    ),
    "d.jsonl": (
        b'{"url": "http://x/11", "n": 1}\n{"url": "http://x/12", \n\n[1, 2]\n{"url": "\xff"}\n'
        b'{"url": "http://x/13", "n": 2}\n',
        ["http://x/11", None, None, None, "http://x/13"],
        {
            1: "d.jsonl line 2: invalid JSON (Expecting property name enclosed in double quotes at column 24)",
            2: "d.jsonl line 4: not a JSON object",
            3: "d.jsonl line 5: not UTF-8",
        },
    ),
}


def test_unparseable_lines_are_rows_in_place(tmp_path, caplog):
    for name, (data, _, _) in BROKEN.items():
        (tmp_path / name).write_bytes(data)
    with gzip.open(tmp_path / "e.jsonl.gz", "wb") as f:
        f.write(b'{"url": "http://x/14"}\n{"url": "http://x/15", "n": "x"}\nnot json\n')
    pq.write_table(pa.table({"url": pa.array([b"http://x/16", b"http://\xff/17"], pa.binary())}), tmp_path / "f.pq")
    cfg = InputConfig(paths=[str(tmp_path)], partition_size=4, duplicate_urls="global")
    with caplog.at_level("WARNING", logger="curation"):
        plan = load_or_make_plan(tmp_path / "step" / "plan.json", cfg)
    assert [f["unparseable"] for f in plan["files"]] == [1, 3, 1, 3, 1, 1]
    assert "b.csv: 3 unparseable lines" in caplog.text
    reader = PartitionReader(plan, "url", None, tmp_path / "step" / "url_duplicates.npy")
    urls, bad = [], {}
    for p in range(plan["partitions"]):
        rows = reader.read(p).column("url").to_pylist()
        bad.update({p * 4 + i: reason for i, reason in reader.unparseable(p).items()})
        urls += rows
    expected, reasons = [], {}
    for _, want, why in BROKEN.values():
        reasons.update({len(expected) + i: r for i, r in why.items()})
        expected += want
    reasons.update(
        {
            len(expected) + 2: "e.jsonl.gz line 3: invalid JSON (Expecting value at column 1)",
            len(expected) + 4: "f.pq row 2: URL is not UTF-8",
        }
    )
    expected += ["http://x/14", "http://x/15", None, "http://x/16", None]
    assert urls == expected
    assert bad == reasons
    assert plan["rows"] == len(expected)


def test_unreadable_files_are_config_errors_naming_them(tmp_path):
    (tmp_path / "a.csv.gz").write_bytes(b"not gzip at all")
    with pytest.raises(ConfigError, match="download.input.paths: .*a.csv.gz: cannot read"):
        load_or_make_plan(tmp_path / "plan.json", _config(tmp_path))
    (tmp_path / "a.csv.gz").unlink()
    (tmp_path / "a.jsonl.xz").write_bytes(b"not xz either")
    with pytest.raises(ConfigError, match="download.input.paths: .*a.jsonl.xz: cannot read"):
        load_or_make_plan(tmp_path / "plan.json", _config(tmp_path))
    (tmp_path / "a.jsonl.xz").unlink()
    (tmp_path / "b.csv").write_bytes(b"u\xffrl,caption\nhttp://x/0,a\nhttp://x/1,b,c\n")
    with pytest.raises(ConfigError, match="download.input.paths: .*b.csv: .*header is not UTF-8"):
        load_or_make_plan(tmp_path / "plan.json", _config(tmp_path))
    with pytest.raises(ConfigError, match="b.csv: its header is not UTF-8"):
        columns_of(str(tmp_path / "b.csv"), "csv", "url")
    (tmp_path / "b.csv").unlink()
    pq.write_table(pa.table({"url": [["http://x/0"]]}), tmp_path / "c.parquet")
    with pytest.raises(ConfigError, match="download.input.url_column: 'url' of .*c.parquet is a list<"):
        load_or_make_plan(tmp_path / "plan.json", _config(tmp_path))


def test_a_run_over_a_list_with_broken_lines_goes_on(tmp_path, server):
    from curation.runner.local import run_stages

    good = server.url("file/astronaut.jpg")
    (tmp_path / "urls.csv").write_bytes(
        b"url,caption\n" + good.encode() + b",fine\nhttp://x/1,a,b\nhttp://\xff/2,c\nhttp://10.0.0.1/3,d\n"
    )
    config = {
        "name": "broken",
        "stages": ["download"],
        "download": {
            "input": {"paths": [str(tmp_path / "urls.csv")], "partition_size": 3},
            "urls": {"allowed_addresses": ["127.0.0.1"]},
        },
    }
    run_stages(tmp_path / "run", config, ["download"])
    step = tmp_path / "run/stages/download/fetch"
    rows = [r for p in sorted(step.glob("part-*.parquet")) for r in pq.read_table(p).to_pylist()]
    assert [(r["key"], r["status"], r["error"], r["url"], r["caption"]) for r in rows] == [
        ("000000000000", "success", None, good, "fine"),
        ("000000000001", "filtered_url:unparseable", "urls.csv line 3: 3 fields, expected 2", None, None),
        ("000000000002", "filtered_url:unparseable", "urls.csv line 4: not UTF-8", None, None),
        ("000001000000", "filtered_url:private_address", None, "http://10.0.0.1/3", "d"),
    ]
    stats = json.loads((step.with_name("fetch.files") / "part-000000.stats.json").read_text())
    assert stats["counts"]["filtered_url:unparseable"] == 2
