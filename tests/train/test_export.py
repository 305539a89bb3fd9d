import pytest
import torch

from curation.errors import CheckpointError
from curation.models.checkpoints import load_backbone
from curation.train import checkpoint as ckpt
from curation.train.export import export_checkpoint


@pytest.mark.slow
def test_export_from_checkpoint_equals_end_of_training_export(long_run, tmp_path):
    out, exported = long_run
    final = ckpt.latest_checkpoint(out / "checkpoints")
    assert final.name == "step-000024"
    path = export_checkpoint(final, tmp_path / "from_ckpt.safetensors")
    a, b = load_backbone(exported), load_backbone(path)
    assert a.config == b.config
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=False):
        assert torch.equal(x, y), name
    images = torch.randn(2, 3, 32, 32)
    assert torch.equal(a(images), b(images))


def test_export_needs_a_checkpoint(tmp_path):
    with pytest.raises(CheckpointError):
        export_checkpoint(tmp_path, tmp_path / "x.safetensors")
