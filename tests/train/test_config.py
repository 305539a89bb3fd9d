import pytest

from curation.errors import ConfigError
from curation.train.config import load_train_config, validate_train_config


def test_defaults_are_dinov2s():
    cfg = validate_train_config({"manifest": "m.json"})
    assert cfg.loss.koleo_weight == 0.1 and cfg.loss.sinkhorn_iterations == 3
    assert cfg.crops.global_scale == (0.32, 1.0) and cfg.crops.num_local == 8
    assert cfg.local_size == 98  # patch 14: 96 rounded up
    assert validate_train_config({"manifest": "m", "vit": {"patch_size": 16}}).local_size == 96
    assert cfg.optim.freeze_last_layer_iterations == 1250 and cfg.optim.clip_grad == 3.0
    assert cfg.total_iterations == 125000


def test_overrides_and_unknown_keys():
    cfg = load_train_config(["manifest=x.json", "optim.batch_size=12", "heads.separate_ibot_head=true"])
    assert cfg.optim.batch_size == 12 and cfg.heads.separate_ibot_head is True
    with pytest.raises(ConfigError, match="did you mean 'optim.batch_size'"):
        load_train_config(["manifest=x.json", "optim.bach_size=12"])
    with pytest.raises(ConfigError, match="did you mean 'manifest'"):
        load_train_config(["manifests=x.json"])
    with pytest.raises(ConfigError, match="manifest: required"):
        load_train_config([])


@pytest.mark.parametrize(
    "override, key",
    [
        ("crops.global_size=100", "crops.global_size"),
        ("masking.ratio_min=0.6", "masking.ratio_min"),
        ("crops.local_scale=[0.5, 0.1]", "crops.local_scale"),
        ("distill.enabled=true", "distill.teacher_checkpoint"),
        ("checkpoint.resume=/no/such/dir", "checkpoint.resume"),
        ("highres.iterations=10", "highres.image_size"),
        ("loss.centering=sinkhorn", "loss.centering"),
    ],
)
def test_cross_key_checks_name_the_key(override, key):
    extra = ["highres.image_size=500"] if override.startswith("highres") else []
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_train_config(["manifest=x.json", override, *extra])


def test_demo_config_validates():
    # every key's description: tests/test_pipelines.py, through `curate config pipeline=train_demo defaults=true`
    cfg = load_train_config(["config=train_demo"])
    assert cfg.model == "vit_small" and cfg.vit.depth == 4
