import gzip
import json

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.download.config import InputConfig
from curation.download.inputs import (
    PartitionReader,
    check_unchanged,
    list_files,
    load_or_make_plan,
    partition_rows,
    partition_slices,
)
from curation.errors import ConfigError, PartitionError


def _lists(root):
    """Five rows over four formats; sorted order: a.parquet, b.csv, c.jsonl.gz, d.txt."""
    pq.write_table(pa.table({"url": ["http://x/0", "http://x/1"], "caption": ["zero", "one"],
                             "id": [10, 11]}), root / "a.parquet")
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
        "a.parquet", "b.csv"]
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
    assert rows[1] == [{"url": "http://x/2", "caption": "two, with comma", "id": "0012"},
                       {"url": "http://x/3", "caption": "three", "id": "13"}]
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
    plan = load_or_make_plan(tmp_path / "plan.json", InputConfig(paths=[str(tmp_path / "l.parquet")],
                                                                 url_column="link"))
    assert PartitionReader(plan, "link", ["status"]).read(0).to_pylist() == [
        {"url": "http://x/0", "input_status": "ok"}]
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
    from curation.download.inputs import make_plan

    return make_plan(cfg)


def test_repeated_urls_over_the_whole_input(tmp_path):
    (tmp_path / "a.txt").write_text("http://x/0\nhttp://x/1\nhttp://x/0\n")
    (tmp_path / "b.txt").write_text("http://x/2\nhttp://x/1\nhttp://x/0\n")
    plan = load_or_make_plan(tmp_path / "step" / "plan.json", _config(tmp_path))
    assert plan["repeated_urls"] == 3
    reader = PartitionReader(plan, "url", None, tmp_path / "step" / "url_duplicates.npy")
    # Rows 2, 4, 5 repeat rows 0, 1, 0; partitions of 2 rows.
    assert [reader.repeated(p) for p in range(3)] == [{}, {0: "000000000000"}, {0: "000000000001",
                                                                               1: "000000000000"}]
    local = load_or_make_plan(tmp_path / "other" / "plan.json", _config(tmp_path, duplicate_urls="partition"))
    assert local["repeated_urls"] is None and not (tmp_path / "other" / "url_duplicates.npy").exists()
    assert PartitionReader(local, "url", None, tmp_path / "other" / "url_duplicates.npy").repeated(2) == {}


def test_missing_url_column_is_a_config_error_when_planning(tmp_path):
    (tmp_path / "a.csv").write_text("link\nhttp://x/0\n")
    with pytest.raises(ConfigError, match="download.input.url_column: 'url' is not a column"):
        load_or_make_plan(tmp_path / "plan.json", _config(tmp_path))
