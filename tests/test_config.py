import pytest

from curation import config as cfg
from curation.errors import ConfigError
from tests.runner.helpers import sample_pipeline


def test_overrides_are_typed_by_yaml():
    assert cfg.parse_overrides(["a.b=1", "c=0.6", "d=true", "e=[1, 2]", "f=text", "g="]) == {
        "a.b": 1,
        "c": 0.6,
        "d": True,
        "e": [1, 2],
        "f": "text",
        "g": "",
    }


@pytest.mark.parametrize("bad", ["novalue", "=1", "a..b=1", ".a=1"])
def test_malformed_override_is_refused(bad):
    with pytest.raises(ConfigError, match="dotted.key=value"):
        cfg.parse_overrides([bad])


def test_apply_overrides_creates_sections_and_refuses_values_as_sections(tmp_path):
    data = sample_pipeline(tmp_path)
    out = cfg.apply_overrides(data, {"numbers.rows": 3, "runner.max_workers": 2})
    assert out["numbers"]["rows"] == 3 and out["runner"]["max_workers"] == 2
    assert data["numbers"]["rows"] == 10  # the input is not modified
    with pytest.raises(ConfigError, match="'numbers.rows' is a value"):
        cfg.apply_overrides(data, {"numbers.rows.x": 1})


def test_unknown_key_names_the_key_and_the_closest_one(tmp_path):
    data = cfg.apply_overrides(sample_pipeline(tmp_path), {"numbers.row": 3})
    with pytest.raises(ConfigError) as err:
        cfg.validate(data)
    assert "numbers.row: unknown key; did you mean 'numbers.rows'?" in str(err.value)


def test_unknown_top_level_key(tmp_path):
    data = {**sample_pipeline(tmp_path), "runer": {}}
    with pytest.raises(ConfigError, match="runer: unknown key; did you mean 'runner'"):
        cfg.validate(data)


def test_wrong_type_and_missing_value(tmp_path):
    with pytest.raises(ConfigError, match=r"numbers.rows: .*integer.*'many'"):
        cfg.validate(cfg.apply_overrides(sample_pipeline(tmp_path), {"numbers.rows": "many"}))
    data = sample_pipeline(tmp_path)
    del data["run_dir"]
    with pytest.raises(ConfigError, match="run_dir: required value is missing"):
        cfg.validate(data)


def test_stage_list_is_checked(tmp_path):
    data = sample_pipeline(tmp_path)
    with pytest.raises(ConfigError, match="unknown stage 'parrity'; did you mean 'parity'"):
        cfg.validate({**data, "stages": ["numbers", "parrity"]})
    with pytest.raises(ConfigError, match="parity: section given but 'parity' is not listed"):
        cfg.validate({**data, "stages": ["numbers"]})
    no_section = {k: v for k, v in data.items() if k != "parity"}
    with pytest.raises(ConfigError, match="has no 'parity' section"):
        cfg.validate(no_section)


def test_malformed_yaml_and_unknown_pipeline(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="malformed YAML"):
        cfg.load(str(bad))
    with pytest.raises(ConfigError, match="pipeline 'demoo' not found.*did you mean 'demo'"):
        cfg.load("demoo")


def test_plugin_that_does_not_import(tmp_path):
    with pytest.raises(ConfigError, match="plugins: cannot import 'no_such_module'"):
        cfg.validate({**sample_pipeline(tmp_path), "plugins": ["no_such_module"]})


def test_content_hash_ignores_runtime_sections(tmp_path):
    a = cfg.validate(sample_pipeline(tmp_path))
    b = cfg.validate(cfg.apply_overrides(sample_pipeline(tmp_path), {"ray.num_cpus": 1, "runner.progress": False}))
    c = cfg.validate(cfg.apply_overrides(sample_pipeline(tmp_path), {"numbers.rows": 11}))
    assert cfg.content_hash(a) == cfg.content_hash(b) != cfg.content_hash(c)
    assert cfg.diff(cfg.to_dict(a), cfg.to_dict(c)) == ["numbers.rows: 10 -> 11"]


def test_every_shipped_pipeline_validates():
    for path in sorted(cfg.PIPELINES_DIR.glob("*.yaml")):
        data = cfg.read_yaml(path)
        if "stages" not in data:  # trainer configs have their own model
            continue
        from curation.demo.run import substitute

        data = substitute(data, {"corpus": "/tmp/corpus", "run_dir": "/tmp/run"})
        cfg.validate(data)


def test_content_hash_leaves_out_location_resources_and_batch_sizes(tmp_path):
    a = cfg.validate(sample_pipeline(tmp_path / "a"))
    b = cfg.validate(
        cfg.apply_overrides(
            sample_pipeline(tmp_path / "b"), {"runner.max_workers": 3, "runner.max_partition_retries": 0}
        )
    )
    assert cfg.content_hash(a) == cfg.content_hash(b)
    keys = cfg.runtime_keys()
    assert {
        "run_dir",
        "ray",
        "runner",
        "download.worker",
        "dedup.descriptor.batch_size",
        "embed.batch_size",
        "embed.num_cpus",
        "cluster.assign_batch_size",
    } <= keys
    assert not {"dedup.descriptor.dims", "embed.model", "download.input"} & keys


def test_unfilled_placeholders_are_config_errors():
    with pytest.raises(ConfigError, match="unfilled placeholders") as err:
        cfg.load("lvd142m")
    assert "download.input.paths.0: '<URL_LISTS>' is a placeholder: fill it in" in str(err.value)
    assert str(err.value).count("is a placeholder") > 10
    from curation import cli

    assert cli.main(["config", "pipeline=lvd142m"]) == 2
