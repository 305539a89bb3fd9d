"""``ray_cluster.yaml`` passes Ray's own cluster-config validation."""

from pathlib import Path

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER = Path(__file__).resolve().parents[1] / "ray_cluster.yaml"


def test_cluster_config_is_valid_for_ray():
    config = yaml.safe_load(CLUSTER.read_text())
    validate_config(prepare_config(config))
    workers = config["available_node_types"]["gpu_worker"]
    assert workers["node_config"]["InstanceType"] == "p3dn.24xlarge"  # 8 x V100-32GB
    assert workers["min_workers"] == workers["max_workers"] == 20
    assert any("curation" in cmd for cmd in config["setup_commands"])
    # The head declares no CPUs: nothing is scheduled on it.
    assert config["available_node_types"]["head"]["resources"] == {"CPU": 0}


def test_validation_catches_a_mistake():
    config = yaml.safe_load(CLUSTER.read_text())
    config["available_node_types"]["head"]["min_worker"] = 1
    with pytest.raises(Exception, match="min_worker"):
        validate_config(prepare_config(config))
