"""The planned, parallel shard writer against the single-process one, and what a rerun redoes."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from curation import config as cfg
from curation.atomic import read_json
from curation.manifest import read_manifest, verify
from curation.runner.local import run_stages
from curation.stages.registry import stage_context
from curation.stages.shard.sequential import write_sequential
from tests.stages.shard import shard_upstream

ROOT = Path(__file__).resolve().parents[3]


def reference(run_dir: Path, data: dict, out: Path):
    """The manifest the single-process writer makes of the same run, in ``out``."""
    ctx = stage_context(cfg.validate({**data, "run_dir": str(run_dir)}), "shard")
    return write_sequential(ctx, out / "shards", out / "staging")


def contents(manifest) -> list[list[tuple[str, str]]]:
    """Per shard, the sorted (key, sha256 of the image) of its samples."""
    out = []
    for url in manifest.shard_urls():
        with tarfile.open(url) as tar:
            out.append(
                sorted(
                    (m.name[:-4], hashlib.sha256(tar.extractfile(m).read()).hexdigest())
                    for m in tar.getmembers()
                    if m.name.endswith(".jpg")
                )
            )
    return out


def assert_same_as_reference(run_dir: Path, data: dict, out: Path, min_shards: int = 2) -> None:
    got = read_manifest(run_dir / "shards" / "manifest.json")
    want = reference(run_dir, data, out)
    assert len(got.shards) >= min_shards
    assert contents(got) == contents(want)
    assert got.shards == want.shards  # same paths, counts, bytes and sha256: byte-identical tars
    assert got.to_json()["totals"] == want.to_json()["totals"]
    assert (got.composition, got.extra, got.config_hash) == (want.composition, want.extra, want.config_hash)
    assert verify(got, check_checksums=True) == []


def _build(tmp_path: Path, shard: dict, partitions: int = 4, rows: int = 60, name: str = "run"):
    run_dir = tmp_path / name
    shard_upstream.build(run_dir, partitions, rows, missing=("000001000003", "000002000010"))
    data = shard_upstream.pipeline(run_dir, tmp_path / f"{name}-sets", shard)
    return run_dir, data


@pytest.mark.parametrize(
    "shard",
    [
        {"max_samples_per_shard": 17, "max_bytes_per_shard": 40_000, "shards_per_task": 1},
        {"max_samples_per_shard": 25, "shards_per_task": 3, "shuffle": False},
        {"max_bytes_per_shard": 6_000, "shards_per_task": 4},  # samples larger than a shard, alone in theirs
    ],
)
def test_same_shards_and_manifest_as_the_single_process_writer(tmp_path, shard):
    run_dir, data = _build(tmp_path, shard)
    run_stages(run_dir, data, ["shard"])
    assert_same_as_reference(run_dir, data, tmp_path / "reference")
    plan = read_json(run_dir / "stages/shard/plan/plan.json")
    markers = [read_json(p) for p in sorted((run_dir / "stages/shard").glob("write*/part-*.stats.json"))]
    assert len(markers) == plan["units"] and sum(len(m["shards"]) for m in markers) == plan["shards"]
    for m in markers:  # each unit's marker lists its shards, relative to the run directory
        assert sorted(m["outputs"]) == [f"shards/{s['path']}" for s in m["shards"]]


def test_a_lost_shard_redoes_its_unit_only(tmp_path):
    run_dir, data = _build(tmp_path, {"max_samples_per_shard": 20, "shards_per_task": 2, "keep_staging": False})
    run_stages(run_dir, data, ["shard"])
    shards = sorted((run_dir / "shards").glob("*.tar"))
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in shards}
    # The as_is images sit in some shard; its unit must stage them again (staging was removed).
    with_as_is = next(p for p in shards if any(n.startswith("photos-") for n in tarfile.open(p).getnames()))
    assert not (run_dir / "stages/shard/as_is").exists()
    with_as_is.unlink()
    report = run_stages(run_dir, data, ["shard"])
    unit = int(with_as_is.name[4:10]) // 2
    assert report.repaired[0] == f"shard/write partition {unit}"
    assert "shard/manifest" in report.repaired and "shard/plan" not in report.repaired
    after = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted((run_dir / "shards").glob("*.tar"))}
    assert {k: v[0] for k, v in after.items()} == {k: v[0] for k, v in before.items()}
    rewritten = {k for k in after if after[k][1] != before[k][1]}
    assert rewritten == {f"lvd-{s:06d}.tar" for s in (2 * unit, 2 * unit + 1)} & set(after)
    assert verify(read_manifest(run_dir / "shards" / "manifest.json"), check_checksums=True) == []


def test_rerun_of_a_finished_stage_writes_nothing(tmp_path):
    run_dir, data = _build(tmp_path, {"max_samples_per_shard": 30})
    run_stages(run_dir, data, ["shard"])
    stamps = {p: p.stat().st_mtime_ns for p in (run_dir / "shards").iterdir()}
    run_stages(run_dir, data, ["shard"])
    assert {p: p.stat().st_mtime_ns for p in (run_dir / "shards").iterdir()} == stamps


@pytest.fixture(scope="module")
def multinode(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("shard-multinode")
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    done = subprocess.run(
        [sys.executable, "-m", "tests.stages.shard.shard_multinode", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out / "runs.json").read_text()) | {"out": str(out)}


def _markers(run_dir: Path, step: str) -> list[dict]:
    return [read_json(p) for p in sorted((run_dir / "stages/shard").glob(f"{step}*/part-*.stats.json"))]


@pytest.mark.slow
def test_one_two_and_four_workers_on_nodes_write_what_one_process_writes(multinode):
    runs = [r for r in multinode["runs"] if r["run_dir"].split("/")[-1].startswith("equal")]
    assert [r["workers"] for r in runs] == [1, 2, 4]
    first = read_manifest(Path(runs[0]["run_dir"]) / "shards" / "manifest.json")
    for run in runs:
        run_dir = Path(run["run_dir"])
        assert_same_as_reference(run_dir, run["data"], Path(multinode["out"]) / f"reference-{run['workers']}")
        assert read_manifest(run_dir / "shards" / "manifest.json").shards == first.shards
        for step in ("locate", "write"):
            nodes = {m["placement"]["node_id"] for m in _markers(run_dir, step)}
            assert nodes <= set(multinode["workers"]), step
    four = Path(runs[2]["run_dir"])
    assert len({m["placement"]["node_id"] for m in _markers(four, "write")}) == 2  # both nodes wrote shards


@pytest.mark.slow
def test_peak_memory_per_worker_stays_flat_at_four_times_the_pool(multinode):
    small, large = (r for r in multinode["runs"] if r["run_dir"].split("/")[-1].startswith("memory"))
    assert (small["workers"], large["workers"]) == (1, 4) and large["partitions"] == 4 * small["partitions"]
    pool_growth = 3 * small["partitions"] * 1500 * 16_000  # the 4N pool's extra image bytes: 144 MB
    for step in ("locate", "write"):
        peaks = [max(m["peak_rss_bytes"] for m in _markers(Path(r["run_dir"]), step)) for r in (small, large)]
        assert peaks[1] - peaks[0] < 32 * 2**20 < pool_growth / 4, (step, peaks)


def test_verify_checks_every_final_shard_against_its_units_marker(tmp_path):
    from curation.runner.verify import verify_run_dir

    run_dir, data = _build(tmp_path, {"max_samples_per_shard": 30})
    run_stages(run_dir, data, ["shard"])
    assert verify_run_dir(run_dir, checksums=True)[1]
    shard = run_dir / "shards" / "lvd-000001.tar"
    body = bytearray(shard.read_bytes())
    body[700] ^= 0xFF  # same size, other bytes: only the checksums see it
    shard.write_bytes(bytes(body))
    assert verify_run_dir(run_dir)[1]
    report, clean = verify_run_dir(run_dir, checksums=True)
    assert not clean and "write partition 1: " in report and "lvd-000001.tar: sha256 differs" in report
    shard.unlink()
    report, clean = verify_run_dir(run_dir)
    assert not clean and "lvd-000001.tar is missing" in report
