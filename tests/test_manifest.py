import json
import tarfile

import jsonschema
import pytest

from curation import manifest as mf
from curation.cli import main
from curation.errors import ManifestError

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def _shards(root, n=2):
    entries = []
    for i in range(n):
        path = root / "shards" / f"lvd-{i:06d}.tar"
        path.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(path, "w") as tar:
            for j in range(3):
                src = root / f"{i}{j}.jpg"
                src.write_bytes(bytes([i, j]) * 100)
                tar.add(src, arcname=f"{i:06d}{j:06d}.jpg")
        entries.append(mf.shard_entry(path, root / "shards", samples=3))
    return entries


def test_round_trip_and_schema(tmp_path):
    shards = _shards(tmp_path)
    path = tmp_path / "shards" / "manifest.json"
    written = mf.write_manifest(
        path, shards, {"pool": 4, "as_is:queries": 2}, "0123456789abcdef", "demo", {"note": "x"}
    )
    data = json.loads(path.read_text())
    jsonschema.validate(data, json.loads((ROOT / "manifests/manifest.schema.json").read_text()))
    assert data["totals"] == {"shards": 2, "samples": 6, "bytes": sum(s.bytes for s in shards)}
    read = mf.read_manifest(path)
    assert read.shards == shards and read.composition == written.composition and read.extra == {"note": "x"}
    assert read.shard_urls() == [str(tmp_path / "shards" / s.path) for s in shards]
    assert mf.verify(read, check_checksums=True) == []


def test_example_manifest_validates():
    mf.validate_json(json.loads((ROOT / "manifests/example.json").read_text()), "example")


def test_refuses_missing_shards_and_bad_totals(tmp_path):
    shards = _shards(tmp_path)
    (tmp_path / "shards" / shards[1].path).unlink()
    with pytest.raises(ManifestError, match="missing shards"):
        mf.write_manifest(tmp_path / "shards/manifest.json", shards, {"pool": 6}, "0" * 16, "demo")
    good = mf.Manifest("demo", "0" * 16, shards, {"pool": 6}, created="now").to_json()
    bad = {**good, "totals": {**good["totals"], "samples": 7}}
    with pytest.raises(ManifestError, match="totals"):
        mf.validate_json(bad)
    with pytest.raises(ManifestError, match="composition does not add up"):
        mf.validate_json({**good, "composition": {"pool": 5}})
    with pytest.raises(ManifestError, match="version 2 is not supported"):
        mf.validate_json({**good, "version": 2})
    with pytest.raises(ManifestError, match="invalid at shards/0/sha256"):
        mf.validate_json({**good, "shards": [{**good["shards"][0], "sha256": "xyz"}] + good["shards"][1:]})


def test_verify_finds_truncated_and_corrupted_shards(tmp_path):
    shards = _shards(tmp_path)
    path = tmp_path / "shards" / "manifest.json"
    mf.write_manifest(path, shards, {"pool": 6}, "0" * 16, "demo")
    first = tmp_path / "shards" / shards[0].path
    data = bytearray(first.read_bytes())
    data[700] ^= 0xFF  # same size, other content
    first.write_bytes(bytes(data))
    (tmp_path / "shards" / shards[1].path).write_bytes(b"short")
    problems = mf.verify(mf.read_manifest(path), check_checksums=True)
    assert problems == [
        f"{shards[0].path}: sha256 mismatch",
        f"{shards[1].path}: 5 bytes, manifest says {shards[1].bytes}",
    ]
    assert mf.verify(mf.read_manifest(path)) == [problems[1]]


def test_inspect_command(tmp_path, capsys):
    shards = _shards(tmp_path)
    path = tmp_path / "shards" / "manifest.json"
    mf.write_manifest(path, shards, {"pool": 6}, "0" * 16, "demo")
    assert main(["inspect", str(path), "checksums=true"]) == 0
    out = capsys.readouterr().out
    assert "valid" in out and "2 shards, 6 samples" in out and "checksums verified" in out
    (tmp_path / "shards" / shards[0].path).unlink()
    assert main(["inspect", str(path)]) == 1
    assert main(["inspect", str(tmp_path / "nope.json")]) == 1
    assert "no such manifest" in capsys.readouterr().err
