"""The dedup stage end to end, in-process (and once on Ray), on a small planted pool.

The download stage's output is built by hand where that stage puts it: per
partition a status table, a tar of ``{key}.jpg`` members and a stats marker.
The descriptor is a random-init ResNet-18 at 64 px with pool centring: such
weights do not detect copies in general, so the copy thresholds are raised
to 0.8 (distinct images stay below ~0.6, the planted downscale above 0.9).
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import skimage.data
from PIL import Image
from sklearn.datasets import load_sample_images

from curation import tables
from curation.errors import ConfigError
from curation.runner.local import run_stages
from curation.stages.base import files_dir, partition_path

pytestmark = pytest.mark.slow
KEY = tables.sample_key


def _jpeg(img: Image.Image, quality: int = 92) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _photo(name: str) -> Image.Image:
    if name in ("china", "flower"):
        return Image.fromarray(load_sample_images().images[0 if name == "china" else 1])
    return Image.fromarray(getattr(skimage.data, name)()).convert("RGB")


def write_download(run_dir: Path, partitions: list[list[bytes | None]]) -> None:
    """Download-stage output: ``None`` is a failed download (row, no image)."""
    step = run_dir / "stages" / "download" / "fetch"
    step.mkdir(parents=True)
    files_dir(step).mkdir()
    for p, blobs in enumerate(partitions):
        keys = [KEY(p, i) for i in range(len(blobs))]
        failed = [b is None for b in blobs]
        status = tables.status_table(
            keys,
            ["failed_download:http_404" if f else "success" for f in failed],
            ["download" if f else None for f in failed],
        )
        tables.write_parquet(status, step / f"part-{p:06d}.parquet")
        with tarfile.open(partition_path(step, p, "tar"), "w") as tar:
            for key, blob in zip(keys, blobs, strict=False):
                if blob is not None:
                    member = tarfile.TarInfo(f"{key}.jpg")
                    member.size = len(blob)
                    tar.addfile(member, io.BytesIO(blob))
        partition_path(step, p, "stats.json").write_text(json.dumps({"rows": len(blobs)}))
    (run_dir / "stages" / "download" / "_SUCCESS.json").write_text("{}")


def pipeline(run_dir: Path, **dedup) -> dict:
    section = {
        "hashing": {"max_distance": 0, "variants": {"enabled": False}},
        "descriptor": {
            "backbone": "resnet18",
            "dims": 64,
            "image_size": 64,
            "center": True,
            "device": "cpu",
            "allow_random_weights": True,
        },
        "copy_dedup": {"threshold": 0.8},
        "relative": {"threshold": 0.8},
    }
    section.update(dedup)
    return {
        "name": "t",
        "run_dir": str(run_dir),
        "stages": ["dedup"],
        "dedup": section,
        "runner": {"max_partition_retries": 0},
    }


def read_stage(run_dir: Path) -> list[dict]:
    rows = []
    for path in sorted((run_dir / "stages" / "dedup" / "table").glob("part-*.parquet")):
        rows += pq.read_table(path).to_pylist()
    return rows


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """A two-partition pool with planted duplicates, plus a benchmark folder."""
    root = tmp_path_factory.mktemp("planted")
    astronaut = _jpeg(_photo("astronaut"))
    rocket = _photo("rocket")
    pool = [
        [
            astronaut,
            _jpeg(_photo("chelsea")),
            _jpeg(_photo("coffee")),
            _jpeg(rocket),
            _jpeg(_photo("camera")),
            astronaut,
            b"<html>not an image</html>",
            None,
        ],
        [
            _jpeg(_photo("moon")),
            _jpeg(_photo("clock")),
            _jpeg(_photo("china")),
            _jpeg(_photo("flower"), 70),
            _jpeg(rocket.resize((rocket.width // 2, rocket.height // 2))),
            _jpeg(_photo("coins")),
            _jpeg(_photo("coffee"))[:300],
        ],
    ]
    bench = root / "bench"
    bench.mkdir()
    (bench / "a_flower.jpg").write_bytes(_jpeg(_photo("flower")))
    (bench / "b_page.jpg").write_bytes(_jpeg(_photo("page")))
    return pool, bench


def _run(root: Path, pool, bench: Path | None, **dedup) -> Path:
    write_download(root, pool)
    if bench is not None:
        dedup["relative"] = {"threshold": 0.8, "benchmarks": [{"name": "bench", "kind": "folder", "path": str(bench)}]}
    run_stages(root, pipeline(root, **dedup), ["dedup"])
    return root


def test_planted_pool_funnel_and_columns(planted, tmp_path):
    pool, bench = planted
    run = _run(tmp_path / "run", pool, bench)
    rows = {r["key"]: r for r in read_stage(run)}
    assert list(rows) == [KEY(0, i) for i in range(8)] + [KEY(1, i) for i in range(7)]
    status = {k: r["status"] for k, r in rows.items()}
    assert status == {
        KEY(0, 0): "success",
        KEY(0, 1): "success",
        KEY(0, 2): "success",
        KEY(0, 3): "success",
        KEY(0, 4): "success",
        KEY(0, 5): "duplicate_hash",
        KEY(0, 6): "failed_decode:unidentified_image",
        KEY(0, 7): "failed_download:http_404",
        KEY(1, 0): "success",
        KEY(1, 1): "success",
        KEY(1, 2): "success",
        KEY(1, 3): "benchmark_leak",
        KEY(1, 4): "duplicate_copy",
        KEY(1, 5): "success",
        KEY(1, 6): "failed_decode:broken_image",
    }
    # Byte-identical copy: the hash group keeps the first key.
    dup = rows[KEY(0, 5)]
    assert dup["duplicate_of"] == KEY(0, 0) and dup["dropped_by"] == "dedup"
    assert dup["error"] == f"hash duplicate of {KEY(0, 0)} (kept; pca distance 0)" and dup["copy_component"] is None
    assert dup["duplicate_distance"] == 0 and dup["hash_method"] == "pca" and rows[KEY(0, 0)]["duplicate_count"] == 1
    assert rows[KEY(0, 5)]["hash_code"] == rows[KEY(0, 0)]["hash_code"] and len(dup["hash_code"]) == 8
    # The downscaled rocket (other partition) has another hash but is a copy: the larger image is kept.
    small, big = rows[KEY(1, 4)], rows[KEY(0, 3)]
    assert small["hash_code"] != big["hash_code"]
    assert small["error"] == f"copy of {KEY(0, 3)} (kept; component of 2)" and small["duplicate_of"] == KEY(0, 3)
    assert small["duplicate_similarity"] == pytest.approx(small["nearest_duplicate_similarity"], abs=1e-3)
    assert small["copy_component"] == big["copy_component"] and small["copy_component_size"] == 2
    assert small["nearest_duplicate_key"] == KEY(0, 3) and big["nearest_duplicate_key"] == KEY(1, 4)
    assert small["nearest_duplicate_similarity"] > 0.8 and (big["width"], big["height"]) == (640, 427)
    # The re-encoded flower leaks a benchmark image: dropped, naming it.
    leak = rows[KEY(1, 3)]
    assert leak["benchmark_hit"] == "bench:bench-00000000"
    assert leak["error"] == "copy of benchmark image bench:bench-00000000 (whole component of 1 removed)"
    assert [k for k, r in rows.items() if r["benchmark_hit"]] == [KEY(1, 3)]
    assert all(r["copy_component_size"] == 1 for k, r in rows.items() if r["status"] == "success" and k != KEY(0, 3))
    funnel = json.loads((run / "stages/dedup/graph/funnel.json").read_text())
    assert funnel == {
        "input": 14,
        "described": 12,
        "after_hash": 11,
        "after_self_dedup": 10,
        "after_relative_dedup": 9,
        "benchmark_images": 2,
    }
    graph = json.loads((run / "stages/dedup/graph/_SUCCESS.json").read_text())
    assert graph["funnel"] == funnel and graph["index"] == "flat"
    # Side files: thumbnails and descriptors of the 6 + 6 described images; the PCA basis.
    features = run / "stages/dedup/features.files"
    assert np.load(features / "part-000001.desc.npy").shape == (6, 64)
    assert np.load(features / "part-000000.thumbs.npy").shape == (6, 32, 32)
    assert (run / "stages/dedup/graph/pca_components.npy").exists()
    assert not (run / "stages/dedup/graph/pool-descriptors.npy").exists()


def test_rerun_gives_identical_tables(planted, tmp_path):
    pool, bench = planted
    first = read_stage(_run(tmp_path / "a", pool, bench))
    second = read_stage(_run(tmp_path / "b", pool, bench))
    assert first == second
    # Rerunning a finished run does no work and changes nothing.
    run_stages(
        tmp_path / "a",
        pipeline(
            tmp_path / "a",
            relative={"threshold": 0.8, "benchmarks": [{"name": "bench", "kind": "folder", "path": str(bench)}]},
        ),
        ["dedup"],
    )
    assert read_stage(tmp_path / "a") == first


def test_one_duplicate_group_with_phash(tmp_path):
    img = _photo("coffee")
    blobs = [_jpeg(img, 90), _jpeg(img, 60), _jpeg(img.resize((300, 200))), _jpeg(img, 90)]
    run = _run(tmp_path, [blobs], None, hashing={"method": "phash", "max_distance": 4})
    rows = read_stage(run)
    assert [r["status"] for r in rows] == ["success"] + ["duplicate_hash"] * 3
    assert [r["duplicate_of"] for r in rows] == [None] + [KEY(0, 0)] * 3
    assert not (run / "stages/dedup/graph/pca_mean.npy").exists()


def test_empty_pool_and_all_failures(tmp_path):
    run = _run(tmp_path, [[], [None, b"garbage"]], None)
    rows = read_stage(run)
    assert [r["status"] for r in rows] == ["failed_download:http_404", "failed_decode:unidentified_image"]
    funnel = json.loads((run / "stages/dedup/graph/funnel.json").read_text())
    assert funnel == {
        "input": 1,
        "described": 0,
        "after_hash": 0,
        "after_self_dedup": 0,
        "after_relative_dedup": 0,
        "benchmark_images": 0,
    }


def test_config_errors_name_the_key(tmp_path):
    write_download(tmp_path, [[]])
    cases = [
        ({"hashing": {"method": "phash", "thumb_size": 16}}, "dedup.hashing.method"),
        ({"descriptor": {"weights": str(tmp_path / "missing.pt")}}, "dedup.descriptor.weights"),
        (
            {"relative": {"benchmarks": [{"name": "b", "kind": "folder", "path": str(tmp_path / "nope")}]}},
            "dedup.relative.benchmarks.0.path",
        ),
        ({"hashing": {"bits": 256, "thumb_size": 16}}, "dedup.hashing.bits"),
        ({"hashing": {"variants": {"enabled": True, "source_size": 16}}}, "dedup.hashing.variants.source_size"),
    ]
    for dedup, key in cases:
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            run_stages(tmp_path, pipeline(tmp_path, **dedup), ["dedup"])


def test_on_ray_the_graph_covers_the_whole_pool(ray_session, planted, tmp_path):
    from curation import config as cfg
    from curation.runner import run_pipeline

    pool, bench = planted
    local = read_stage(_run(tmp_path / "local", pool, bench))
    write_download(tmp_path / "ray", pool)
    data = pipeline(
        tmp_path / "ray",
        relative={"threshold": 0.8, "benchmarks": [{"name": "bench", "kind": "folder", "path": str(bench)}]},
    )
    data["runner"] = {"max_workers": 2, "progress": False, "max_partition_retries": 0}
    data["ray"] = {"num_cpus": 2, "dashboard": False}
    run_pipeline(cfg.validate(data))
    # Partition 0 and 1 went to different workers; the cross-partition copy is still found.
    assert read_stage(tmp_path / "ray") == local


def test_descriptor_whose_dimension_differs_from_the_config_is_found_before_any_work(tmp_path):
    import torch

    from curation import config as cfg
    from curation.models import sscd
    from curation.stages.registry import get_stage

    path = tmp_path / "sscd16.pt"
    torch.jit.trace(sscd.SSCD("resnet18", dims=16).eval(), torch.zeros(1, 3, 64, 64)).save(str(path))
    data = {
        "name": "t",
        "run_dir": str(tmp_path / "run"),
        "stages": ["dedup"],
        "dedup": {"descriptor": {"weights": str(path), "dims": 32, "image_size": 64}},
    }
    problems = get_stage("dedup").preflight(cfg.validate(data))
    assert problems == [
        f"dedup.descriptor.dims: {path} gives 16-d descriptors, the config says 32 (set dedup.descriptor.dims: 16)"
    ]
    data["dedup"]["descriptor"]["dims"] = 16
    assert get_stage("dedup").preflight(cfg.validate(data)) == []
