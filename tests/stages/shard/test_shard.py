"""The shard stage: shards + manifest round trip, read with webdataset and tarfile."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from curation import config as cfg
from curation import tables
from curation.manifest import read_manifest, verify
from curation.runner.local import run_stages
from tests.stages.retrieve import retrieval_upstream as up


def _run(tmp_path, shard: dict, collisions: str = "best", missing: tuple[str, ...] = (), name: str = "run"):
    run_dir = tmp_path / name
    up.build(run_dir, missing_images=missing)
    keys, x, _ = up.alive_vectors()
    near = x[[0, 9, 17]]
    topics = up.unit(up.centroids()[[2, 2, 2, 2]])
    curated = []
    for set_name, vectors in (("near", near), ("topics", topics)):
        folder = tmp_path / "sets" / set_name
        folder.mkdir(parents=True, exist_ok=True)
        curated.append({"name": set_name, "path": str(folder)})
        up.write_curated(run_dir, set_name, vectors)
    seeds = up.image_folder(tmp_path / "sets" / "seeds", 2, "JPEG")
    curated.append({"name": "seeds", "path": str(seeds)})
    photos = up.image_folder(tmp_path / "photos", 3, "PNG")
    retrieve = {
        "datasets": [
            {"name": "photos", "mode": "as_is", "source": {"name": "photos", "path": str(photos)}},
            {"name": "near_knn", "source": "near", "mode": "sample", "k": 2},
            {"name": "seeds", "source": "seeds", "mode": "as_is"},
            {"name": "topics_cluster", "source": "topics", "mode": "cluster", "per_cluster": 3},
        ],
        "collisions": collisions,
    }
    data = up.pipeline(run_dir, curated, retrieve, shard)
    run_stages(run_dir, data, ["retrieve", "shard"])
    return run_dir, data


def _wds_samples(manifest):
    import webdataset as wds

    return list(wds.WebDataset(manifest.shard_urls(), shardshuffle=False, empty_check=False))


def test_shards_and_manifest_round_trip(tmp_path):
    run_dir, data = _run(tmp_path, {"max_samples_per_shard": 4, "shuffle": False})
    manifest = read_manifest(run_dir / "shards" / "manifest.json")
    assert manifest.config_hash == cfg.content_hash(cfg.validate(data))
    assert manifest.pipeline == "retrieval-test"
    assert manifest.composition == {"photos": 3, "near_knn": 6, "seeds": 2, "topics_cluster": 3}
    assert manifest.num_samples == 14
    assert [s.path for s in manifest.shards] == [f"lvd-{i:06d}.tar" for i in range(4)]
    assert [s.samples for s in manifest.shards] == [4, 4, 4, 2]
    assert verify(manifest, check_checksums=True) == []
    assert manifest.extra["datasets"]["near_knn"] == {"mode": "sample", "source": "near"}

    samples = _wds_samples(manifest)
    metas = [json.loads(s["json"]) for s in samples]
    # config order without shuffle: photos, near_knn, seeds, topics_cluster
    assert [m["dataset"] for m in metas] == ["photos"] * 3 + ["near_knn"] * 6 + ["seeds"] * 2 + ["topics_cluster"] * 3
    assert [s["__key__"] for s in samples[:3]] == ["photos-00000000", "photos-00000001", "photos-00000002"]
    for sample, meta in zip(samples, metas, strict=True):
        assert sample["jpg"][:3] == b"\xff\xd8\xff"  # PNG sources re-encoded to JPEG
        assert Image.open(io.BytesIO(sample["jpg"])).size == (8, 6)
        assert meta["key"] == sample["__key__"]
        if meta["mode"] == "as_is":
            assert meta["source"] in ("photos", "seeds") and meta["query_key"] is None and meta["path"]
        else:
            assert meta["source"] == "pool" and meta["source_key"] == sample["__key__"]
            assert meta["url"] == f"http://pool.test/{meta['source_key']}.jpg"
            # The URL list's columns ride along; the download stage's own do not.
            assert meta["caption"] == f"caption of {meta['source_key']}" and meta["license"] == "cc-by"
            assert meta["input_dataset"] == "web" and "sha256" not in meta and "width" not in meta
            assert meta["query_dataset"] in ("near", "topics") and meta["query_key"].startswith(meta["query_dataset"])
            assert isinstance(meta["similarity"], float) and meta["cluster"] >= 0 and meta["rank"] >= 0
    cluster_metas = [m for m in metas if m["mode"] == "cluster"]
    assert {m["cluster"] for m in cluster_metas} == {2}

    # plain tarfile: {key}.jpg then {key}.json, in manifest order
    names = []
    for entry in manifest.shards:
        with tarfile.open(run_dir / "shards" / entry.path) as tar:
            members = tar.getmembers()
            assert len(members) == 2 * entry.samples and all(m.mtime == 0 for m in members)
            names += [m.name for m in members]
    assert names == [f"{s['__key__']}.{ext}" for s in samples for ext in ("jpg", "json")]


def test_stage_table_one_row_per_pool_sample(tmp_path):
    missing = (tables.sample_key(0, 0),)  # retrieved, but its image is gone from the download tar
    run_dir, _ = _run(tmp_path, {"shuffle": False}, missing=missing)
    manifest = read_manifest(run_dir / "shards" / "manifest.json")
    shard_table = [pq.read_table(p) for p in sorted((run_dir / "stages/shard/table").glob("part-*.parquet"))]
    mark = [pq.read_table(p) for p in sorted((run_dir / "stages/retrieve/mark").glob("part-*.parquet"))]
    assert [t.num_rows for t in shard_table] == [up.ROWS] * up.PARTITIONS
    written = 0
    for before, after in zip(mark, shard_table, strict=True):
        for b, a in zip(before.to_pylist(), after.to_pylist(), strict=True):
            assert a["key"] == b["key"]
            if b["status"] != "success":
                assert (a["status"], a["dropped_by"]) == (b["status"], b["dropped_by"])
            elif a["key"] in missing:
                assert (a["status"], a["dropped_by"]) == ("not_written", "shard")
                assert "missing" in a["error"] and a["shard"] is None
            else:
                assert a["status"] == "success" and a["shard"] == "lvd-000000.tar" and a["shard_key"] == a["key"]
                assert a["copies_written"] == 1
                written += 1
    assert written == sum(v for k, v in manifest.composition.items() if k in ("near_knn", "topics_cluster"))
    assert manifest.extra["not_written"] == 1


def test_deterministic_shuffle_and_byte_identical_reruns(tmp_path):
    shard = {"max_samples_per_shard": 5, "shuffle": True}
    a, _ = _run(tmp_path, shard, name="a")
    b, _ = _run(tmp_path, shard, name="b")
    ma, mb = (read_manifest(d / "shards" / "manifest.json") for d in (a, b))
    assert [s.sha256 for s in ma.shards] == [s.sha256 for s in mb.shards]
    plain, _ = _run(tmp_path, {"max_samples_per_shard": 5, "shuffle": False}, name="plain")
    keys = [s["__key__"] for s in _wds_samples(ma)]
    ordered = [s["__key__"] for s in _wds_samples(read_manifest(plain / "shards" / "manifest.json"))]
    assert sorted(keys) == sorted(ordered) and keys != ordered


def test_rolls_by_bytes_and_keeps_duplicates(tmp_path):
    limit = 6000
    run_dir, _ = _run(tmp_path, {"max_bytes_per_shard": limit, "shuffle": False}, collisions="keep_duplicates")
    manifest = read_manifest(run_dir / "shards" / "manifest.json")
    assert len(manifest.shards) > 1
    per_shard = []  # bytes of each sample: header block + data padded to 512, per member
    for entry in manifest.shards:
        with tarfile.open(run_dir / "shards" / entry.path) as tar:
            blocks = [512 + -(-m.size // 512) * 512 for m in tar.getmembers()]
            per_shard.append([blocks[i] + blocks[i + 1] for i in range(0, len(blocks), 2)])
    assert all(sum(s) <= limit for s in per_shard if len(s) > 1)
    # rolled only when the next sample would not fit
    assert all(sum(a) + b[0] > limit for a, b in zip(per_shard, per_shard[1:], strict=False))
    keys = [s["__key__"] for s in _wds_samples(manifest)]
    assert len(keys) == len(set(keys)) == manifest.num_samples
    assert manifest.composition["near_knn"] == 3 * 2  # queries x k with duplicates kept
    duplicates = [k for k in keys if "_" in k]
    assert all(k.split("_")[0] in keys for k in duplicates)


@pytest.mark.parametrize("bad", [{"max_samples_per_shard": 0}, {"shuffled": True}])
def test_shard_config_is_strict(tmp_path, bad):
    from curation.errors import ConfigError

    data = up.pipeline(
        tmp_path, [], {"datasets": [{"name": "x", "source": {"name": "x", "path": "."}, "mode": "as_is"}]}, bad
    )
    with pytest.raises(ConfigError):
        cfg.validate(data)


def test_rerun_is_a_no_op_and_manifest_lists_existing_shards(tmp_path):
    run_dir, data = _run(tmp_path, {"shuffle": False})
    before = (run_dir / "shards" / "manifest.json").read_bytes()
    run_stages(run_dir, data, ["retrieve", "shard"])
    assert (run_dir / "shards" / "manifest.json").read_bytes() == before
    assert np.all(
        [(run_dir / "shards" / s.path).exists() for s in read_manifest(run_dir / "shards" / "manifest.json").shards]
    )


def test_pool_samples_carry_their_dedup_decision(tmp_path):
    import pyarrow as pa

    table_dir = tmp_path / "run" / "stages" / "dedup" / "table"
    table_dir.mkdir(parents=True)
    for p in range(up.PARTITIONS):
        keys = [tables.sample_key(p, r) for r in range(up.ROWS)]
        counts = [r % 3 for r in range(up.ROWS)]  # images dropped in favour of each kept image
        tables.write_parquet(
            pa.table({"key": keys, "duplicate_count": pa.array(counts, pa.int64())}),
            table_dir / f"{tables.partition_name(p)}.parquet",
        )
    run_dir, _ = _run(tmp_path, {"shuffle": False})
    metas = [json.loads(s["json"]) for s in _wds_samples(read_manifest(run_dir / "shards" / "manifest.json"))]
    pool = [m for m in metas if m["source"] == "pool"]
    assert pool and all("dedup" not in m for m in metas if m["source"] != "pool")
    for meta in pool:
        k = int(meta["source_key"][-6:]) % 3
        expected = {"decision": "kept", "duplicates": k, "group_size": k + 1} if k else {"decision": "unique"}
        assert meta["dedup"] == expected, meta


def test_deleted_final_shard_is_written_again_by_a_rerun(tmp_path):
    run_dir, data = _run(tmp_path, {"shuffle": False, "max_samples_per_shard": 8})

    def written():
        return {p.name: p.read_bytes() for p in (run_dir / "shards").glob("*.tar")}, read_manifest(
            run_dir / "shards" / "manifest.json"
        ).shards

    before = written()
    assert sorted(before[0]) == ["lvd-000000.tar", "lvd-000001.tar"]
    (run_dir / "shards" / "lvd-000001.tar").unlink()
    report = run_stages(run_dir, data, ["retrieve", "shard"])
    # Its write unit is redone (not the plan, not the other unit), then what follows it.
    assert report.repaired == [
        "shard/write partition 1",
        "shard/manifest",
        "shard/table partition 0",
        "shard/table partition 1",
        "shard/table partition 2",
    ]
    assert written() == before
    assert verify(read_manifest(run_dir / "shards" / "manifest.json"), check_checksums=True) == []
    # The same run in another directory: the same content, the same config hash in its manifest.
    other, _ = _run(tmp_path, {"shuffle": False, "max_samples_per_shard": 8}, name="other")
    assert (
        read_manifest(other / "shards" / "manifest.json").config_hash
        == read_manifest(run_dir / "shards" / "manifest.json").config_hash
    )
