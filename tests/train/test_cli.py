import pytest

from curation.errors import ConfigError
from curation.models.checkpoints import load_backbone
from curation.train.cli import train_main


def test_unknown_key_fails_before_work(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'optim.iterations'"):
        train_main([f"manifest={tmp_path}/m.json", "optim.iteration=3"])
    assert not any(tmp_path.iterdir())


def test_train_main_runs_the_demo_config_on_shards(shards_dir, tmp_path):
    out = tmp_path / "run"
    code = train_main([
        "config=train_demo", f"manifest={shards_dir / 'manifest.json'}", f"output_dir={out}",
        "vit.embed_dim=32", "vit.depth=1", "vit.num_heads=2", "crops.global_size=32", "crops.local_size=16",
        "crops.num_local=2", "heads.dino_prototypes=32", "heads.ibot_prototypes=32", "heads.hidden_dim=32",
        "optim.iterations=2", "optim.batch_size=4", "data.num_workers=1", "device=cpu",
    ])
    assert code == 0
    assert load_backbone(out / "backbone.safetensors").config["depth"] == 1
