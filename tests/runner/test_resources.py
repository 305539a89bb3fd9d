"""The resource rule: requests resolved on the cluster's nodes, refused before any work when they cannot fit."""

from __future__ import annotations

import pytest

from curation.errors import ConfigError
from curation.runner.local import run_stages
from curation.runner.resources import ClusterView, Node, resolve
from curation.stages.base import AUTO, Grant, Resources, device_gpus
from tests.stages.retrieve import retrieval_upstream as up

GIB = 2**30
CPU_ONLY = ClusterView((Node("a", "10.0.0.1", 8, 0, 64 * GIB), Node("b", "10.0.0.2", 16, 0, 32 * GIB)))
GPUS = ClusterView(
    (
        Node("a", "10.0.0.1", 96, 8, 768 * GIB, {"pool_node": 1}),
        Node("b", "10.0.0.2", 96, 8, 768 * GIB, {"pool_node": 1}),
    )
)


def test_auto_gpus_follow_the_cluster_not_this_machine():
    assert resolve(Resources(num_gpus=AUTO), GPUS, "s").num_gpus == 1
    assert resolve(Resources(num_gpus=AUTO), CPU_ONLY, "s").num_gpus == 0
    assert [device_gpus(d) for d in ("cpu", "cuda", "auto")] == [0, 1, AUTO]


def test_whole_node_takes_every_cpu_and_gpu_of_the_largest_node():
    request = resolve(Resources(num_gpus=AUTO, whole_node=True), GPUS, "s")
    assert (request.num_cpus, request.num_gpus, request.whole_node) == (96, 8, True)
    assert request.bundle() == {"CPU": 96, "GPU": 8}
    cpu = resolve(Resources(num_gpus=0, whole_node=True, memory=GIB), CPU_ONLY, "s")
    assert (cpu.num_cpus, cpu.num_gpus) == (16, 0)
    assert cpu.ray_options() == {"num_cpus": 16, "num_gpus": 0, "memory": GIB}


def test_custom_resources_travel_to_ray():
    request = resolve(Resources(custom=(("pool_node", 1),)), GPUS, "s")
    assert request.ray_options()["resources"] == {"pool_node": 1}
    with pytest.raises(ConfigError, match="pool_node"):
        resolve(Resources(custom=(("pool_node", 1),)), CPU_ONLY, "s")


def test_a_request_no_node_can_hold_names_the_step_and_the_key():
    with pytest.raises(ConfigError, match=r"retrieve/search shards: .*100\.0 GiB.*set retrieve\.shards\.memory_gb"):
        resolve(Resources(memory=100 * GIB, key="retrieve.shards.memory_gb"), CPU_ONLY, "retrieve/search shards")
    with pytest.raises(ConfigError, match="GPUs"):
        resolve(Resources(num_gpus=1), CPU_ONLY, "embed/pool")
    with pytest.raises(ConfigError, match="no node with CPUs"):
        resolve(Resources(), ClusterView(()), "embed/pool")


def test_run_refuses_a_step_that_cannot_fit_before_any_work(tmp_path):
    run_dir = tmp_path / "run"
    up.build(run_dir)
    up.write_curated(run_dir, "near", up.alive_vectors()[1][:2])
    folder = tmp_path / "near"
    folder.mkdir()
    retrieve = {"datasets": [{"name": "k", "source": "near", "mode": "sample"}], "shards": {"memory_gb": 1e6}}
    data = up.pipeline(run_dir, [{"name": "near", "path": str(folder)}], retrieve)
    with pytest.raises(ConfigError, match=r"retrieve/search shards: .*set retrieve\.shards\.memory_gb"):
        run_stages(run_dir, data, ["retrieve"])
    assert not (run_dir / "stages" / "retrieve").exists()


def test_workers_at_once_count_every_limit_and_what_is_already_taken():
    from curation.runner.resources import at_once

    assert at_once(resolve(Resources(num_cpus=4), CPU_ONLY, "s"), CPU_ONLY) == 2 + 4
    assert at_once(resolve(Resources(num_cpus=4), CPU_ONLY, "s"), CPU_ONLY, busy=Grant(1, 0, 0, "b")) == 5
    assert at_once(resolve(Resources(num_cpus=4), CPU_ONLY, "s"), CPU_ONLY, busy=Grant(1, 0, 0, "a")) == 5
    assert at_once(resolve(Resources(num_gpus=AUTO), GPUS, "s"), GPUS) == 16  # one per GPU
    assert at_once(resolve(Resources(memory=100 * GIB), GPUS, "s"), GPUS) == 2 * 7  # 768 GiB // 100 GiB
