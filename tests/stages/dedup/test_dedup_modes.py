"""The dedup stage's modes: hash only (the default without weights), refusals, and a real SSCD-shaped file.

Without descriptor weights no copy detection runs (random weights merge
distinct photographs); the hash pass with geometric variants catches
mirrored, cropped and padded copies, and benchmark leaks by hash. With a
TorchScript file of the official SSCD layout (a ResNet-50 trunk, GeM, a
512-d projection, here with random weights) the whole copy path runs.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import ImageOps

from curation import tables
from curation.errors import ConfigError
from curation.runner.local import run_stages
from tests.stages.dedup.test_dedup import _jpeg, _photo, read_stage, write_download

pytestmark = pytest.mark.slow
KEY = tables.sample_key


def _pipeline(run_dir, **dedup) -> dict:
    return {
        "name": "t",
        "run_dir": str(run_dir),
        "stages": ["dedup"],
        "dedup": dedup,
        "runner": {"max_partition_retries": 0},
    }


def _run(root, pool, **dedup):
    write_download(root, pool)
    run_stages(root, _pipeline(root, **dedup), ["dedup"])
    return {r["key"]: r for r in read_stage(root)}


def test_without_weights_the_hash_pass_catches_geometric_copies(tmp_path):
    coffee, rocket, chelsea = _photo("coffee"), _photo("rocket"), _photo("chelsea")
    pool = [
        [
            _jpeg(coffee),
            _jpeg(rocket),
            _jpeg(chelsea),
            _jpeg(_photo("camera")),
            _jpeg(ImageOps.mirror(coffee)),  # mirrored
            _jpeg(rocket.crop((0, 0, int(rocket.width * 0.8), int(rocket.height * 0.8)))),  # 20% crop
            _jpeg(ImageOps.expand(chelsea, (0, 40, 0, 40), fill=(0, 0, 0))),
        ]
    ]  # letterbox padding
    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "cam.jpg").write_bytes(_jpeg(_photo("camera").resize((256, 256)), 60))
    rows = _run(tmp_path / "run", pool, relative={"benchmarks": [{"name": "b", "kind": "folder", "path": str(bench)}]})
    status = [rows[KEY(0, i)]["status"] for i in range(7)]
    # keep: largest (area) keeps the padded chelsea over its original
    assert status == ["success", "success", "duplicate_hash", "benchmark_leak"] + ["duplicate_hash"] * 2 + ["success"]
    for copy, original in ((4, 0), (5, 1), (2, 6)):
        row = rows[KEY(0, copy)]
        assert row["duplicate_of"] == KEY(0, original) and 0 <= row["duplicate_distance"] <= 4
        assert row["hash_method"] == "pca" and row["duplicate_similarity"] is None
        assert row["error"] == f"hash duplicate of {KEY(0, original)} (kept; pca distance {row['duplicate_distance']})"
        assert rows[KEY(0, original)]["duplicate_count"] == 1
    assert rows[KEY(0, 3)]["benchmark_hit"] == "b:b-00000000"
    features = tmp_path / "run/stages/dedup/features.files"
    assert np.load(features / "part-000000.desc.npy").shape == (7, 0)  # no descriptor work at all
    assert np.load(features / "part-000000.sources.npy").shape == (7, 64, 64)
    graph = json.loads((tmp_path / "run/stages/dedup/graph/_SUCCESS.json").read_text())
    assert graph["copy_dedup"] is False and graph["index"] == "none" and graph["hash"]["variants"] == 157
    check = graph["hash"]  # every hash match passed the pixel check, rejected ones excluded
    assert check["min_correlation"] == 0.8 and check["candidate_pairs"] - check["rejected_pairs"] >= 3
    # The same pool without variants: the geometric copies survive.
    rows = _run(tmp_path / "plain", pool, hashing={"variants": {"enabled": False}})
    assert [rows[KEY(0, i)]["status"] for i in range(7)] == ["success"] * 7


def test_copy_detection_with_random_weights_is_refused(tmp_path):
    write_download(tmp_path, [[]])
    for section in ("copy_dedup", "relative"):
        with pytest.raises(ConfigError, match=rf"dedup\.{section}\.enabled: copy detection needs"):
            run_stages(tmp_path, _pipeline(tmp_path, **{section: {"enabled": True}}), ["dedup"])


@pytest.fixture(scope="module")
def sscd_file(tmp_path_factory):
    """A TorchScript file with the official sscd_disc_mixup layout (ResNet-50, GeM, 512-d), random weights."""
    from curation.models.sscd import SSCD

    torch.manual_seed(0)
    model = SSCD("resnet50", 512).eval()
    assert "backbone.fc.weight" in model.state_dict() and "backbone.layer4.2.conv3.weight" in model.state_dict()
    path = tmp_path_factory.mktemp("weights") / "sscd_disc_mixup.torchscript.pt"
    torch.jit.trace(model, torch.zeros(1, 3, 64, 64)).save(str(path))
    return path


def test_wrong_descriptor_dims_fail_before_any_work(tmp_path, sscd_file):
    weights = sscd_file
    write_download(tmp_path, [[_jpeg(_photo("coffee"))]])
    with pytest.raises(ConfigError, match=r"dedup\.descriptor\.dims: .* gives 512-d descriptors, the config says 128"):
        run_stages(
            tmp_path,
            _pipeline(tmp_path, descriptor={"weights": str(weights), "dims": 128, "image_size": 64}),
            ["dedup"],
        )
    assert not (tmp_path / "stages/dedup").exists()


def test_sscd_torchscript_end_to_end(tmp_path, sscd_file):
    weights = sscd_file
    flower, coffee = _photo("flower"), _photo("coffee")
    pool = [
        [_jpeg(coffee), _jpeg(_photo("astronaut")), _jpeg(_photo("camera"))],
        [_jpeg(coffee.rotate(4, expand=False)), _jpeg(flower, 70), _jpeg(_photo("moon"))],
    ]
    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "flower.jpg").write_bytes(_jpeg(flower))
    # The official thresholds (0.6 self, 0.45 relative); small inputs keep the test fast.
    rows = _run(
        tmp_path / "run",
        pool,
        descriptor={"weights": str(weights), "image_size": 64, "center": True, "device": "cpu"},
        relative={"benchmarks": [{"name": "b", "kind": "folder", "path": str(bench)}]},
    )
    status = {k: r["status"] for k, r in rows.items()}
    assert status == {
        KEY(0, 0): "success",
        KEY(0, 1): "success",
        KEY(0, 2): "success",
        KEY(1, 0): "duplicate_copy",
        KEY(1, 1): "benchmark_leak",
        KEY(1, 2): "success",
    }
    rotated = rows[KEY(1, 0)]
    assert rotated["duplicate_of"] == KEY(0, 0) and rotated["duplicate_similarity"] > 0.6
    assert rotated["duplicate_distance"] is None and rows[KEY(0, 0)]["duplicate_count"] == 1
    assert rows[KEY(1, 1)]["benchmark_hit"] == "b:b-00000000"
    desc = np.load(tmp_path / "run/stages/dedup/features.files/part-000001.desc.npy")
    assert desc.shape == (3, 512)
    graph = json.loads((tmp_path / "run/stages/dedup/graph/_SUCCESS.json").read_text())
    assert graph["copy_dedup"] and graph["relative_dedup"] and graph["index"] == "flat"


class _CornerColour(torch.nn.Module):
    """A descriptor that sees only the mean colour of the top-left 8x8 input pixels (8-d: 3 + zeros)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x[:, :, :8, :8].mean(dim=(2, 3))
        return torch.cat([mean, torch.zeros(len(x), 5)], dim=1)


def _painted(name: str, direction: tuple[float, float, float], size: int = 256):
    """A photo whose top-left quarter has the colour whose normalised value is the unit ``direction``."""
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    v = np.array(direction) / np.linalg.norm(direction)
    colour = tuple(int(c) for c in np.rint((v * std + mean) * 255))
    img = _photo(name).resize((size, size))
    img.paste(colour, (0, 0, size // 4, size // 4))
    return img


def test_relative_dedup_runs_on_the_self_deduplicated_pool(tmp_path):
    """A -- A' at cosine 0.71 (> 0.6: A' is dropped for A); A' -- benchmark at 0.57 (> 0.45), A -- benchmark
    at 0: the benchmark reaches A only through the copy self-dedup drops, so A stays. C -- benchmark at 0.6
    (and 0 to A, A'): C leaks."""
    weights = tmp_path / "corner.torchscript.pt"
    torch.jit.script(_CornerColour()).save(str(weights))
    pool = [
        [
            _jpeg(_painted("astronaut", (1, 0, 0), 320), 95),
            _jpeg(_painted("coffee", (1, 1, 0)), 95),
            _jpeg(_painted("chelsea", (0, 0, 1)), 95),
        ]
    ]
    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "b.jpg").write_bytes(_jpeg(_painted("camera", (0, 0.8, 0.6)), 95))
    rows = _run(
        tmp_path / "run",
        pool,
        hashing={"variants": {"enabled": False}},
        descriptor={"weights": str(weights), "dims": 8, "image_size": 64, "device": "cpu"},
        relative={"benchmarks": [{"name": "b", "kind": "folder", "path": str(bench)}]},
    )
    assert [rows[KEY(0, i)]["status"] for i in range(3)] == ["success", "duplicate_copy", "benchmark_leak"]
    assert rows[KEY(0, 1)]["duplicate_of"] == KEY(0, 0)
    assert rows[KEY(0, 1)]["duplicate_similarity"] == pytest.approx(np.cos(np.radians(45)), abs=0.03)
    assert rows[KEY(0, 0)]["benchmark_hit"] is None and rows[KEY(0, 2)]["benchmark_hit"] == "b:b-00000000"
