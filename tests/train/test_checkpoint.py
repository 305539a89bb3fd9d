import pytest
import torch

from curation.errors import CheckpointError
from curation.train import checkpoint as ckpt
from curation.train.fsdp import close_distributed, init_distributed, shard_meta_arch
from curation.train.loop import build_optimizer
from curation.train.meta_arch import SSLMetaArch
from tests.train.helpers import tiny_config


def test_listing_ignores_incomplete(tmp_path):
    for name in ("step-000010", "step-000002", "step-000030.partial", "step-000040", "other"):
        (tmp_path / name).mkdir()
    for name in ("step-000010", "step-000002", "step-000030.partial"):
        (tmp_path / name / ckpt.STATE_FILE).write_text("{}")
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step-000002", "step-000010"]
    assert ckpt.latest_checkpoint(tmp_path).name == "step-000010"
    ckpt.remove_partial(tmp_path)
    assert not (tmp_path / "step-000030.partial").exists()
    assert ckpt.latest_checkpoint(tmp_path / "missing") is None


def test_round_trip_and_pruning(tmp_path):
    ctx = init_distributed("cpu")
    try:
        cfg = tiny_config(loss={"centering": "centering"})
        torch.manual_seed(0)
        meta = SSLMetaArch(cfg)
        shard_meta_arch(meta, cfg, ctx.device)
        optimizer = build_optimizer(cfg, meta)
        with torch.no_grad():
            meta.dino_center.center.fill_(0.25)
        for it in (1, 2, 3):
            state = {"data": [[0, 1, 2, 3, 4]]}
            path = ckpt.save_checkpoint(tmp_path, it, meta, optimizer, state, keep=2, is_main=True)
        assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step-000002", "step-000003"]

        torch.manual_seed(1)  # different initial weights
        other = SSLMetaArch(cfg)
        shard_meta_arch(other, cfg, ctx.device)
        state = ckpt.load_checkpoint(path, other, build_optimizer(cfg, other))
        assert state == {"data": [[0, 1, 2, 3, 4]], "iteration": 3}
        assert torch.equal(other.dino_center.center, torch.full_like(other.dino_center.center, 0.25))
        for (name, a), b in zip(meta.state_dict().items(), other.state_dict().values(), strict=False):
            a = a.full_tensor() if hasattr(a, "full_tensor") else a
            b = b.full_tensor() if hasattr(b, "full_tensor") else b
            assert torch.equal(a, b), name

        small = SSLMetaArch(tiny_config(heads={"dino_prototypes": 32}))
        shard_meta_arch(small, cfg, ctx.device)
        with pytest.raises(CheckpointError, match="does not match"):
            ckpt.load_checkpoint(path, small, build_optimizer(cfg, small))
        with pytest.raises(CheckpointError, match="not a complete checkpoint"):
            ckpt.load_checkpoint(tmp_path / "nowhere", meta, optimizer)
    finally:
        close_distributed(ctx)
