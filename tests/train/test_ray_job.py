import pytest

from curation.errors import ConfigError
from curation.models.checkpoints import load_backbone
from curation.train.ray_job import launch, parse_launch


def test_parse_launch():
    assert parse_launch(["workers=4", "gpus=true", "cpus_per_worker=2"]) == {
        "workers": 4,
        "gpus": True,
        "cpus_per_worker": 2,
    }
    with pytest.raises(ConfigError, match="workers=N is required"):
        parse_launch(["gpus=false"])
    with pytest.raises(ConfigError, match="unknown launch key 'worker'"):
        parse_launch(["worker=2"])
    with pytest.raises(ConfigError, match="workers must be int"):
        parse_launch(["workers=two"])


def test_bad_trainer_config_fails_before_any_worker():
    with pytest.raises(ConfigError, match="did you mean"):
        launch(["manifest=m.json", "optim.batch=2"], workers=2, gpus=False)


@pytest.mark.slow
def test_two_ray_train_workers(ray_session, shards_dir, tmp_path):
    overrides = [
        f"manifest={shards_dir / 'manifest.json'}",
        f"output_dir={tmp_path}",
        "vit.embed_dim=32",
        "vit.depth=1",
        "vit.num_heads=2",
        "vit.patch_size=8",
        "crops.global_size=32",
        "crops.local_size=16",
        "crops.num_local=2",
        "heads.dino_prototypes=32",
        "heads.ibot_prototypes=32",
        "heads.hidden_dim=32",
        "optim.iterations=2",
        "optim.batch_size=2",
        "data.num_workers=0",
        "device=cpu",
    ]
    launch(overrides, workers=2, gpus=False, cpus_per_worker=1)
    state = (tmp_path / "checkpoints" / "step-000002" / "train_state.json").read_text()
    assert '"world_size": 2' in state
    assert load_backbone(tmp_path / "backbone.safetensors").config["depth"] == 1
