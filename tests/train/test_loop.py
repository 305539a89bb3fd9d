import json

import numpy as np
import pytest
import torch

from curation.train import checkpoint as ckpt
from curation.train import loop
from curation.train.loop import TrainingDiverged, train
from curation.train.meta_arch import SSLMetaArch
from tests.train.helpers import records as _records
from tests.train.helpers import run_config as _config


def _losses(out):
    return {r["iteration"]: r["total"] for r in _records(out) if "total" in r}


@pytest.mark.slow
def test_end_to_end_loss_decreases(long_run):
    out, exported = long_run
    losses = _losses(out)
    assert sorted(losses) == list(range(24))
    first, last = np.mean([losses[i] for i in range(4)]), np.mean([losses[i] for i in range(20, 24)])
    assert last < 0.8 * first
    record = _records(out)[5]
    for key in (
        "dino",
        "ibot",
        "koleo",
        "lr",
        "weight_decay",
        "momentum",
        "teacher_temp",
        "images_per_s",
        "memory_gib",
        "corrupt",
        "bad_shards",
        "grad_norm_backbone",
    ):
        assert key in record, key
    assert record["images_per_s"] > 0 and record["memory_gib"] > 0
    knn = [r for r in _records(out) if "knn_top1" in r]
    assert len(knn) == 1 and 0.0 <= knn[0]["knn_top1"] <= knn[0]["knn_top5"] == 1.0
    assert [p.name for p in ckpt.list_checkpoints(out / "checkpoints")] == ["step-000016", "step-000024"]
    # The exported backbone is what the embed stage loads.
    from curation.models.checkpoints import load_model

    model = load_model("curation", str(exported))
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 32)


@pytest.mark.slow
def test_kill_and_resume_continue_the_same_trajectory(long_run, shards_dir, tmp_path, monkeypatch):
    reference = _losses(long_run[0])
    cfg = _config(shards_dir, tmp_path, optim={"iterations": 24}, checkpoint={"every": 8, "keep": 2}, log_every=1)
    real_step, calls = loop.train_step, []

    def killed_after_ten(*args, **kwargs):
        calls.append(1)
        if len(calls) > 10:
            raise KeyboardInterrupt  # the job dies mid-run, after the iteration-8 checkpoint
        return real_step(*args, **kwargs)

    monkeypatch.setattr(loop, "train_step", killed_after_ten)
    with pytest.raises(KeyboardInterrupt):
        train(cfg)
    monkeypatch.setattr(loop, "train_step", real_step)
    assert ckpt.latest_checkpoint(tmp_path / "checkpoints").name == "step-000008"
    train(cfg)
    resumed = [r for r in _records(tmp_path)[10:] if "total" in r]
    assert [r["iteration"] for r in resumed] == list(range(8, 24))
    for record in resumed:
        assert record["total"] == pytest.approx(reference[record["iteration"]], rel=1e-6)


def test_nan_loss_stops_with_the_last_good_checkpoint(shards_dir, tmp_path, monkeypatch):
    real, calls = SSLMetaArch.forward_backward, []

    def nan_on_third(self, batch, teacher_temp, scaler=None):
        calls.append(1)
        losses = real(self, batch, teacher_temp, scaler)
        return {**losses, "total": float("nan")} if len(calls) == 3 else losses

    monkeypatch.setattr(SSLMetaArch, "forward_backward", nan_on_third)
    cfg = _config(shards_dir, tmp_path, checkpoint={"every": 2})
    with pytest.raises(TrainingDiverged, match="iteration 2.*step-000002"):
        train(cfg)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "checkpoints")] == ["step-000002"]


def test_highres_phase_switches_crop_size(shards_dir, tmp_path, monkeypatch):
    real, shapes = SSLMetaArch.forward_backward, []

    def record(self, batch, teacher_temp, scaler=None):
        shapes.append((tuple(batch["global_crops"].shape[-2:]), tuple(batch["masks"].shape)))
        return real(self, batch, teacher_temp, scaler)

    monkeypatch.setattr(SSLMetaArch, "forward_backward", record)
    cfg = _config(
        shards_dir,
        tmp_path,
        optim={"iterations": 2},
        highres={"iterations": 2, "image_size": 48},
        checkpoint={"every": 100},
    )
    train(cfg)
    assert shapes == [((32, 32), (16, 16))] * 2 + [((48, 48), (16, 36))] * 2
    lrs = [r["lr"] for r in _records(tmp_path)]
    assert lrs[2] == 0.0 and 0 < lrs[3] < lrs[1]  # compressed warmup restarts from 0, scaled down


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_mixed_precision_runs(shards_dir, tmp_path, dtype):
    cfg = _config(shards_dir, tmp_path, optim={"iterations": 3}, fsdp={"param_dtype": dtype, "reduce_dtype": "fp32"})
    train(cfg)
    losses = _losses(tmp_path)
    assert len(losses) == 3 and all(np.isfinite(v) for v in losses.values())
    if dtype == "fp16":  # the loss scale travels with the checkpoint
        state = json.loads((ckpt.latest_checkpoint(tmp_path / "checkpoints") / ckpt.STATE_FILE).read_text())
        assert state["grad_scaler"]["scale"] > 0


@pytest.mark.slow
def test_compiled_blocks_follow_the_eager_trajectory(shards_dir, tmp_path):
    losses = {}
    for name, compiled in (("eager", False), ("compiled", True)):
        out = tmp_path / name
        train(_config(shards_dir, out, optim={"iterations": 2}, log_every=1, compile=compiled))
        losses[name] = _losses(out)
    assert sorted(losses["compiled"]) == [0, 1]
    for it in (0, 1):
        assert losses["compiled"][it] == pytest.approx(losses["eager"][it], rel=1e-4)
