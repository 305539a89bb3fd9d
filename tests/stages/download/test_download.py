"""The download stage end to end against a loopback server: one row per URL, always."""

import csv
import json
import tarfile

import pyarrow.parquet as pq
import pytest

from curation import tables
from curation.download.decode import decode
from curation.runner.local import run_stages
from curation.stages.base import files_dir as side
from tests.download import images
from tests.download.server import LoopbackServer


@pytest.fixture(scope="module")
def server():
    srv = LoopbackServer().start()
    yield srv
    srv.stop()


def _cases(srv):
    """(url, expected status, caption) of every case; duplicates right after what they copy."""
    photo = images.jpeg(1200, 900)
    files = {
        "photo.jpg": photo,
        "copy.jpg": photo,
        "page.html": images.html(),
        "empty.jpg": b"",
        "truncated.jpg": images.truncated_jpeg(),
        "corrupt.png": images.corrupt_png(),
        "bomb.png": images.png_bomb(),
        "huge.png": images.png_header_only(30000, 30000),
        "cmyk.jpg": images.cmyk_jpeg(),
        "deep.png": images.png16(),
        "palette.png": images.palette_png_transparent(),
        "anim.gif": images.animated_gif(),
        "rotated.jpg": images.exif_rotated_jpeg(6),
        "small.webp": images.webp(),
        "big.bin": b"\xff\xd8\xff" + b"\x00" * 400_000,
    }
    for name, body in files.items():
        srv.add(name, body)
    u = srv.url
    return [
        (u("file/photo.jpg"), "success"),
        (u("file/photo.jpg"), "duplicate_url"),
        (u("file/copy.jpg"), "duplicate_exact"),
        (u("status/404"), "failed_download:http_404"),
        (u("status/403"), "failed_download:http_403"),
        (u("status/500"), "failed_download:http_500"),
        (u("sleep/3"), "failed_download:read_timeout"),
        (u("drip/3"), "failed_download:timeout"),
        (u("flaky/429/photo.jpg/1?retry_after=1"), "duplicate_exact"),
        (u("loop/a"), "failed_download:redirect_loop"),
        (u("redirect/1/x?to=http://10.0.0.1/x.jpg"), "filtered_url:private_address"),
        (u("redirect/1/x?to=http://169.254.169.254/latest/"), "filtered_url:link_local_address"),
        (u("file/page.html"), "failed_decode:not_image"),
        (u("file/empty.jpg"), "failed_download:empty"),
        (u("file/truncated.jpg"), "failed_decode:corrupt"),
        (u("file/corrupt.png"), "failed_decode:corrupt"),
        (u("file/bomb.png"), "failed_decode:too_many_pixels"),
        (u("file/huge.png"), "failed_decode:too_many_pixels"),
        (u("file/cmyk.jpg"), "success"),
        (u("file/deep.png"), "success"),
        (u("file/palette.png"), "success"),
        (u("file/anim.gif"), "success"),
        (u("file/rotated.jpg"), "success"),
        (u("file/small.webp"), "success"),
        (u("file/big.bin"), "failed_download:too_large"),
        (u("file/photo.jpg?robots=noai"), "filtered_optout:noai"),
        ("ftp://127.0.0.1/x.jpg", "filtered_url:scheme"),
        ("http://exa mple.com/x.jpg", "filtered_url:malformed"),
        ("http://10.0.0.1/x.jpg", "filtered_url:private_address"),
        ("", "filtered_url:empty"),
        (u("file/photo.jpg"), "duplicate_url"),  # repeats row 0 from another partition
    ]


def _pipeline(tmp_path, srv, partition_size=16):
    cases = _cases(srv)
    with open(tmp_path / "urls.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["url", "caption", "id"])
        for i, (url, _) in enumerate(cases):
            writer.writerow([url, f"caption {i}", f"{i:04d}"])
    config = {
        "name": "download-test",
        "run_dir": str(tmp_path / "run"),
        "stages": ["download"],
        "download": {
            "input": {"paths": [str(tmp_path / "urls.csv")], "partition_size": partition_size},
            "urls": {"allowed_addresses": ["127.0.0.1"]},
            "http": {
                "connect_timeout": 1,
                "read_timeout": 1,
                "total_timeout": 1.5,
                "max_bytes": 300_000,
                "retries": 1,
                "backoff": 0.01,
                "retry_after_max": 0.1,
            },
            "image": {"resize": "max_side", "size": 256, "max_pixels": 50_000_000},
            "worker": {"batch_size": 7},
        },
    }
    return config, cases


def _read(run_dir):
    step = run_dir / "stages/download/fetch"
    rows = [r for p in sorted(step.glob("part-*.parquet")) for r in pq.read_table(p).to_pylist()]
    return step, rows


def test_every_case_gets_its_status(tmp_path, server):
    config, cases = _pipeline(tmp_path, server)
    run_stages(tmp_path / "run", config, ["download"])
    step, rows = _read(tmp_path / "run")
    assert len(rows) == len(cases)
    assert [r["status"] for r in rows] == [status for _, status in cases]
    assert [r["key"] for r in rows] == [tables.sample_key(i // 16, i % 16) for i in range(len(cases))]
    assert [r["caption"] for r in rows] == [f"caption {i}" for i in range(len(cases))]
    assert [r["id"] for r in rows] == [f"{i:04d}" for i in range(len(cases))]  # CSV ids keep their zeros
    by_status = {r["status"]: r for r in rows}
    first = rows[0]
    assert rows[1]["duplicate_of"] == rows[2]["duplicate_of"] == rows[8]["duplicate_of"] == first["key"]
    assert rows[-1]["duplicate_of"] == first["key"]
    assert (first["original_width"], first["original_height"], first["width"], first["height"]) == (1200, 900, 256, 192)
    assert first["http_status"] == 200 and first["bytes"] == len(server.files["photo.jpg"][0])
    assert all((r["dropped_by"] is None) == (r["status"] == "success") for r in rows)
    assert by_status["failed_download:http_404"]["http_status"] == 404
    rotated = rows[22]
    assert (rotated["original_width"], rotated["original_height"]) == (40, 60)
    _check_tar(step, rows)
    stats = json.loads((side(step) / "part-000000.stats.json").read_text())
    assert stats["rows"] == 16 and stats["download"]["tar_samples"] == 1 == stats["counts"]["success"]
    assert stats["download"]["retries"] == 2  # one 429, one 500


def _check_tar(step, rows):
    successes = {r["key"]: r for r in rows if r["status"] == "success"}
    stored = {}
    for tar_path in sorted(side(step).glob("part-*.tar")):
        with tarfile.open(tar_path) as tar:
            for member in tar:
                stored[member.name] = tar.extractfile(member).read()
    assert sorted(stored) == sorted(f"{k}.{ext}" for k in successes for ext in ("jpg", "json"))
    for key, row in successes.items():
        meta = json.loads(stored[f"{key}.json"])
        assert meta["url"] == row["url"] and meta["caption"] == row["caption"] and meta["sha256"] == row["sha256"]
        pixels = decode(stored[f"{key}.jpg"], ("jpeg",), 10**8).pixels
        assert pixels.shape == (row["height"], row["width"], 3)


def test_rerun_is_deterministic_and_resumes(tmp_path, server):
    config, _ = _pipeline(tmp_path, server)
    run_stages(tmp_path / "run", config, ["download"])
    step, first = _read(tmp_path / "run")
    # A crash before the stage finished, after partition 0 committed: only partition 1 is redone.
    (step.parent / "_SUCCESS.json").unlink()
    (side(step) / "part-000001.stats.json").unlink()
    (side(step) / "part-000001.tar").unlink()
    before = (side(step) / "part-000000.tar").stat().st_mtime_ns
    run_stages(tmp_path / "run", config, ["download"])
    assert (side(step) / "part-000000.tar").stat().st_mtime_ns == before
    assert (side(step) / "part-000001.stats.json").exists() and _read(tmp_path / "run")[1] == first
    # Another run dir from the same inputs: identical tables and byte-identical tars.
    run_stages(tmp_path / "again", dict(config, run_dir=str(tmp_path / "again")), ["download"])
    again_step, again = _read(tmp_path / "again")
    assert again == first
    for name in ("part-000000.tar", "part-000001.tar"):
        assert (side(again_step) / name).read_bytes() == (side(step) / name).read_bytes()


@pytest.mark.slow
def test_on_ray_equals_in_process(ray_session, tmp_path, server):
    from curation import config as cfg
    from curation.runner import run_pipeline

    config, cases = _pipeline(tmp_path, server)
    config["runner"] = {"max_workers": 2, "progress": False}
    run_pipeline(cfg.validate(config))
    _, rows = _read(tmp_path / "run")
    assert [r["status"] for r in rows] == [status for _, status in cases]


def test_empty_url_lists_are_config_errors_naming_each_file(tmp_path):
    from curation.errors import ConfigError

    (tmp_path / "header_only.csv").write_text("url,caption\n")
    (tmp_path / "blank.txt").write_text("\n\n")
    (tmp_path / "ok.txt").write_text("\nhttp://127.0.0.1/a.jpg\n")
    config = {
        "name": "t",
        "run_dir": str(tmp_path / "run"),
        "stages": ["download"],
        "download": {"input": {"paths": [str(tmp_path / n) for n in ("header_only.csv", "blank.txt", "ok.txt")]}},
    }
    with pytest.raises(ConfigError) as err:
        run_stages(tmp_path / "run", config)
    assert str(err.value).startswith("2 problems; nothing was run")
    for name in ("header_only.csv", "blank.txt"):
        assert f"download.input.paths: URL list '{tmp_path / name}' is empty (no rows)" in str(err.value)
    assert not (tmp_path / "run").exists()
