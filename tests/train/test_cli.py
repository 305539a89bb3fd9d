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
    code = train_main(
        [
            "config=train_demo",
            f"manifest={shards_dir / 'manifest.json'}",
            f"output_dir={out}",
            "vit.embed_dim=32",
            "vit.depth=1",
            "vit.num_heads=2",
            "crops.global_size=32",
            "crops.local_size=16",
            "crops.num_local=2",
            "heads.dino_prototypes=32",
            "heads.ibot_prototypes=32",
            "heads.hidden_dim=32",
            "optim.iterations=2",
            "optim.batch_size=4",
            "data.num_workers=1",
            "device=cpu",
        ]
    )
    assert code == 0
    assert load_backbone(out / "backbone.safetensors").config["depth"] == 1


def test_train_says_what_an_iteration_is_and_logs_the_first(shards_dir, tmp_path, caplog):
    import logging

    caplog.set_level(logging.INFO, logger="curation.train")
    train_main(
        [
            "config=train_demo",
            f"manifest={shards_dir / 'manifest.json'}",
            f"output_dir={tmp_path}",
            "vit.embed_dim=32",
            "vit.depth=1",
            "vit.num_heads=2",
            "crops.global_size=32",
            "crops.local_size=16",
            "crops.num_local=2",
            "heads.dino_prototypes=32",
            "heads.ibot_prototypes=32",
            "heads.hidden_dim=32",
            "optim.iterations=3",
            "optim.batch_size=4",
            "data.num_workers=0",
            "device=cpu",
            "log_every=100",
        ]
    )
    messages = [r.getMessage() for r in caplog.records if r.name == "curation.train"]
    assert messages[0].startswith("training vit_small on ")
    assert "4 images x (2 global 32 px + 2 local 16 px" in messages[0]
    assert any(m.startswith("it 0 |") for m in messages)  # before log_every: the first iteration is logged


def test_the_default_recipe_states_its_memory_need():
    from curation.train.cli import activation_gib, memory_warning
    from curation.train.config import load_train_config

    full = load_train_config(["manifest=m.json", "device=cpu"])
    # 64 images x (2 x 257 + 8 x 50 tokens) x 12 blocks x 384 dims x 105 bytes
    assert activation_gib(full) == pytest.approx(64 * 914 * 12 * 384 * 105 / 2**30)
    assert 25 < activation_gib(full) < 28
    assert activation_gib(load_train_config(["manifest=m.json", "config=train_demo"])) < 0.5
    tight = load_train_config(["manifest=m.json", "device=cpu", "optim.batch_size=100000"])
    assert "Lower optim.batch_size" in memory_warning(tight)
    assert memory_warning(load_train_config(["manifest=m.json", "device=cuda"])) is None
