import pytest
import torch

from curation.errors import ConfigError
from curation.models.checkpoints import load_backbone
from curation.train import checkpoint as ckpt
from curation.train.checkpoint import load_ema_model
from curation.train.distill import DistillMetaArch, build_meta_arch
from curation.train.loop import train
from curation.train.meta_arch import SSLMetaArch
from tests.train.helpers import make_batch, run_config, tiny_config


@pytest.fixture(scope="module")
def teacher_checkpoint(long_run):
    return ckpt.latest_checkpoint(long_run[0] / "checkpoints")


def test_frozen_teacher_is_the_checkpoints_ema(teacher_checkpoint, long_run):
    teacher, teacher_cfg = load_ema_model(teacher_checkpoint)
    assert teacher_cfg.model == "vit_small" and set(teacher) == {"backbone", "dino_head", "ibot_head"}
    assert not any(p.requires_grad for p in teacher.parameters())
    exported = load_backbone(long_run[1])  # the EMA teacher backbone at the end of that run
    for (name, a), b in zip(exported.state_dict().items(), teacher["backbone"].state_dict().values(), strict=False):
        assert torch.equal(a, b), name


def test_distill_step_uses_all_patches_without_masks(teacher_checkpoint, monkeypatch):
    cfg = tiny_config(
        vit={"depth": 1, "embed_dim": 16, "drop_path_rate": 0.3},
        heads={"dino_prototypes": 8},  # replaced by the teacher's heads
        distill={"enabled": True, "teacher_checkpoint": str(teacher_checkpoint)},
    )
    meta = build_meta_arch(cfg)
    assert isinstance(meta, DistillMetaArch) and meta.frozen_prefixes == ("teacher.",)
    assert meta.student["dino_head"].last_layer.weight_v.shape[0] == 64  # the teacher's K
    assert all(b.drop_path == 0.0 for b in meta.student["backbone"].blocks)
    seen = {}
    real = SSLMetaArch.teacher_targets

    def spy(self, global_crops, patch_index, temperature):
        seen["patch_index"] = patch_index
        return real(self, global_crops, patch_index, temperature)

    monkeypatch.setattr(SSLMetaArch, "teacher_targets", spy)
    batch = make_batch(0)
    batch["masks"][:] = False  # what the loader gives in distillation
    teacher_before = {k: v.clone() for k, v in meta.teacher.state_dict().items()}
    meta.train().forward_backward(batch, 0.05)
    assert seen["patch_index"].tolist() == list(range(16 * 16))  # iBOT on every patch of the 2x8 global crops
    with torch.no_grad():
        for p in meta.student.parameters():
            p.add_(1.0)
    meta.update_teacher(0.5)
    for k, v in meta.teacher.state_dict().items():
        assert torch.equal(v, teacher_before[k]), k  # frozen
    for ema, student in zip(meta.student_ema.parameters(), meta.student.parameters(), strict=False):
        torch.testing.assert_close(ema, student - 0.5)  # the spare EMA follows the student


@pytest.mark.slow
def test_distill_run_exports_the_student_ema(teacher_checkpoint, shards_dir, tmp_path):
    cfg = run_config(
        shards_dir,
        tmp_path,
        vit={"depth": 1},
        optim={"iterations": 3},
        distill={"enabled": True, "teacher_checkpoint": str(teacher_checkpoint)},
    )
    exported = train(cfg)
    model = load_backbone(exported)
    assert len(model.blocks) == 1  # the student's architecture
    saved = ckpt.latest_checkpoint(tmp_path / "checkpoints")
    names = {p.name for p in saved.iterdir()}
    assert ckpt.STATE_FILE in names
    from torch.distributed.checkpoint import FileSystemReader

    keys = FileSystemReader(str(saved)).read_metadata().state_dict_metadata
    assert any(k.startswith("model.student_ema.") for k in keys)
    assert not any(k.startswith("model.teacher.") for k in keys)  # the frozen teacher is not copied


def test_patch_size_must_match(teacher_checkpoint):
    cfg = tiny_config(vit={"patch_size": 16}, distill={"enabled": True, "teacher_checkpoint": str(teacher_checkpoint)})
    with pytest.raises(ConfigError, match="patch_size"):
        build_meta_arch(cfg)
