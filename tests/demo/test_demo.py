"""`curate demo` end to end on the shared local Ray, checked against the corpus' ground truth."""

import json

import pyarrow.parquet as pq
import pytest

from curation.cli import main
from curation.manifest import read_manifest, verify

STAGES = ["download", "dedup", "embed", "cluster", "retrieve", "shard"]


def _table(run_dir, stage):
    tables = sorted((run_dir / "stages" / stage).glob("*/part-*.parquet"))
    step = {
        "download": "fetch",
        "dedup": "table",
        "embed": "pool",
        "cluster": "assign",
        "retrieve": "mark",
        "shard": "table",
    }[stage]
    rows = []
    for path in tables:
        if path.parent.name == step:
            rows += pq.read_table(path).to_pylist()
    return rows


@pytest.fixture(scope="module")
def demo_run(ray_session, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("demo") / "run"
    assert main(["demo", f"run_dir={run_dir}", "size=tiny", "runner.progress=false"]) == 0
    return run_dir


@pytest.mark.slow
def test_every_url_has_one_terminal_status_in_every_stage(demo_run):
    urls = pq.read_table(demo_run / "corpus/urls.parquet").column("url").to_pylist()
    download = _table(demo_run, "download")
    assert [r["url"] for r in download] == urls
    keys = [r["key"] for r in download]
    assert len(set(keys)) == len(keys)
    for stage in STAGES:
        rows = _table(demo_run, stage)
        assert [r["key"] for r in rows] == keys, stage
        assert all(r["status"] for r in rows)
        assert all((r["status"] == "success") == (r["dropped_by"] is None) for r in rows), stage


@pytest.mark.slow
def test_planted_problems_get_the_expected_statuses(demo_run):
    truth = json.loads((demo_run / "corpus/truth.json").read_text())
    download = {r["url"]: r for r in _table(demo_run, "download")}
    status = {r["key"]: r for r in _table(demo_run, "dedup")}
    for url in truth["broken"]:
        assert download[url]["status"] in ("failed_download:http_404", "filtered_url:scheme")
    name_to_key = {url.rsplit("/", 1)[-1]: row["key"] for url, row in download.items() if url.startswith("http")}
    for dup in truth["exact_duplicates"]:  # the one listed first is kept
        pair = [status[name_to_key[dup[k]]]["status"] for k in ("original", "copy")]
        assert pair.count("duplicate_exact") == 1, pair
    for leak in truth["leaks"]:
        assert status[name_to_key[leak["pool"]]]["status"] == "benchmark_leak"
    # Re-encoded, resized and mirrored copies are caught without a descriptor (mirrors by the hash variants):
    # never both the copy and its original survive.
    for near in truth["near_duplicates"]:
        if near["transform"] in ("reencoded", "resized", "flipped"):
            pair = [status[name_to_key[near[k]]]["status"] for k in ("original", "copy")]
            assert pair.count("success") <= 1, (near, pair)
    # And no image is ever dropped in favour of a different photograph (other crops of one photo included).
    origin = {name: name for name in name_to_key}
    origin.update({d["copy"]: d["original"] for d in truth["near_duplicates"] + truth["exact_duplicates"]})
    key_to_name = {r["key"]: r["url"].rsplit("/", 1)[-1] for r in _table(demo_run, "download")}
    for row in status.values():
        if row["status"] == "duplicate_hash":
            assert origin[key_to_name[row["key"]]] == origin[key_to_name[row["duplicate_of"]]], row


@pytest.mark.slow
def test_manifest_and_shards(demo_run, capsys):
    manifest = read_manifest(demo_run / "shards/manifest.json")
    assert verify(manifest, check_checksums=True) == []
    assert sum(manifest.composition.values()) == manifest.num_samples > 0
    import webdataset as wds

    samples = list(wds.WebDataset(manifest.shard_urls(), shardshuffle=False).decode("pil").to_tuple("jpg", "json"))
    assert len(samples) == manifest.num_samples
    # The composition is what the retrieval config asked for: every entry, the query set as it is.
    assert set(manifest.composition) == {"queries", "queries_knn", "queries_clusters"}
    queries = sum(1 for p in (demo_run / "corpus/queries").rglob("*.jpg"))
    assert manifest.composition["queries"] == queries
    retrieved = sum(r["status"] == "success" for r in _table(demo_run, "shard"))
    assert manifest.composition["queries_knn"] + manifest.composition["queries_clusters"] == retrieved
    assert manifest.composition["queries_clusters"] <= 20  # its cap
    assert main(["status", f"run_dir={demo_run}"]) == 0
    out = capsys.readouterr().out
    assert all(f"{stage}: complete" in out for stage in STAGES)


@pytest.mark.slow
def test_every_stage_table_opens_in_pandas_duckdb_and_polars(demo_run):
    import duckdb
    import pandas as pd

    from curation.stages.registry import get_stage

    polars = pytest.importorskip("polars")
    n = len(_table(demo_run, "download"))
    for stage in STAGES:
        path = demo_run / "stages" / stage / get_stage(stage).table_step
        frame = pd.read_parquet(path)
        assert len(frame) == n and list(frame.columns[:4]) == ["key", "status", "dropped_by", "error"], stage
        assert duckdb.sql(f"select count(*) from read_parquet('{path}')").fetchall() == [(n,)], stage
        assert polars.read_parquet(path).height == n, stage


@pytest.mark.slow
def test_readme_python_examples_run_on_the_demo(demo_run, tmp_path, monkeypatch, capsys):
    """The README's Python snippets, run as written on the demo's run directory."""
    import re
    from pathlib import Path

    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    snippets = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    assert len(snippets) >= 3
    for code in snippets:
        exec(compile(code.replace("runs/demo", str(demo_run)), "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "shard 47 " in out and "success" in out


@pytest.mark.slow
def test_shards_are_those_of_the_single_process_writer(demo_run, tmp_path):
    """The planned, parallel writer on the demo gives byte for byte the shards of the one loop it replaced."""
    from curation.runner.rundir import read_config
    from tests.stages.shard.test_shard_write import assert_same_as_reference

    assert_same_as_reference(demo_run, read_config(demo_run), tmp_path, min_shards=1)


@pytest.mark.slow
def test_the_in_process_backend_writes_the_outputs_of_ray(demo_run, tmp_path):
    """Same corpus, same config, another backend: every table, array, shard and the manifest are the same."""
    from tests.demo.compare import differences

    run_dir = tmp_path / "local"
    assert main(["demo", f"run_dir={run_dir}", "size=tiny", "backend=local", "runner.progress=false"]) == 0
    assert differences(demo_run, run_dir) == []


def test_the_comparison_sees_a_changed_decision_and_a_missing_file(tmp_path):
    import shutil

    import pyarrow as pa

    from tests.demo.compare import differences

    a, b = tmp_path / "a", tmp_path / "b"
    (a / "stages/dedup/table").mkdir(parents=True)
    table = pa.table({"key": ["0", "1"], "status": ["success", "success"], "url": ["http://127.0.0.1:4000/x"] * 2})
    pq.write_table(table, a / "stages/dedup/table/part-000000.parquet")
    (a / "shards").mkdir()
    (a / "shards/manifest.json").write_text(json.dumps({"created": "then", "totals": {"samples": 2}}))
    shutil.copytree(a, b)
    (b / "shards/manifest.json").write_text(json.dumps({"created": "now", "totals": {"samples": 2}}))
    served_elsewhere = table.set_column(2, "url", pa.array(["http://127.0.0.1:5123/x"] * 2))
    pq.write_table(served_elsewhere, b / "stages/dedup/table/part-000000.parquet")
    assert differences(a, b) == []  # another port, another creation time
    changed = table.set_column(1, "status", pa.array(["success", "duplicate_hash"]))
    pq.write_table(changed, b / "stages/dedup/table/part-000000.parquet")
    (b / "shards/manifest.json").unlink()
    assert differences(a, b) == [
        f"only in {a}: shards/manifest.json",
        "differs: stages/dedup/table/part-000000.parquet",
    ]
