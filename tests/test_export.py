"""Export to img2dataset's layout, and the shards read by Hugging Face ``datasets``, offline."""

import json

import pyarrow.parquet as pq
import pytest

from curation.cli import main
from curation.errors import ManifestError
from curation.export import export_img2dataset
from curation.manifest import read_manifest
from tests.stages.shard.test_shard import _run, _wds_samples


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    run_dir, _ = _run(tmp_path_factory.mktemp("export"), {"max_samples_per_shard": 5, "shuffle": False})
    return run_dir


def test_export_writes_img2dataset_layout(shards, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["export", f"run_dir={shards}", f"out={out}"]) == 0
    assert "exported 3 shards, 14 samples" in capsys.readouterr().out
    manifest = read_manifest(shards / "shards" / "manifest.json")
    assert sorted(p.name for p in out.iterdir()) == [
        f"{i:05d}{suffix}" for i in range(3) for suffix in (".parquet", ".tar", "_stats.json")
    ]
    samples = _wds_samples(manifest)
    table = pq.ParquetDataset(sorted(out.glob("*.parquet"))).read()  # one schema across shards
    assert table.column("key").to_pylist() == [s["__key__"] for s in samples]
    rows = table.to_pylist()
    for row, sample in zip(rows, samples, strict=False):
        meta = json.loads(sample["json"])
        assert row["status"] == "success" and row["error_message"] is None
        assert (row["width"], row["height"]) == (8, 6)
        assert row["dataset"] == meta["dataset"] and row["url"] == meta.get("url")
    assert {r["caption"] for r in rows if r["source"] == "pool"} == {
        f"caption of {r['source_key']}" for r in rows if r["source"] == "pool"
    }
    for i, entry in enumerate(manifest.shards):  # tars unchanged: same bytes as the manifest's
        assert (out / f"{i:05d}.tar").read_bytes() == (shards / "shards" / entry.path).read_bytes()
        stats = json.loads((out / f"{i:05d}_stats.json").read_text())
        assert stats["count"] == stats["successes"] == entry.samples and stats["failed_to_download"] == 0


def test_export_refuses_a_manifest_with_missing_shards(shards, tmp_path):
    copy = tmp_path / "copy"
    (copy / "shards").mkdir(parents=True)
    (copy / "shards/manifest.json").write_bytes((shards / "shards/manifest.json").read_bytes())
    with pytest.raises(ManifestError, match="cannot export"):
        export_img2dataset(copy / "shards/manifest.json", tmp_path / "out")


def test_hugging_face_webdataset_loader_reads_the_shards(shards, tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    manifest = read_manifest(shards / "shards" / "manifest.json")
    ds = datasets.load_dataset(
        "webdataset", data_files={"train": manifest.shard_urls()}, split="train", cache_dir=str(tmp_path / "hf")
    )
    assert ds.num_rows == manifest.num_samples
    assert ds["__key__"] == [s["__key__"] for s in _wds_samples(manifest)]
    first = ds[0]
    assert first["jpg"].size == (8, 6) and first["json"]["key"] == first["__key__"]
