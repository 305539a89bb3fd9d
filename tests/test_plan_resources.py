"""`curate plan ... pool_size=N`: per-step resources, memory and time on a cluster; refusal before a run."""

from __future__ import annotations

import pytest

from curation import config as cfg
from curation.config import ClusterSection
from curation.errors import ConfigError
from curation.plan import plan_cluster, plan_command
from curation.plan_resources import GIB, HASH_QUERIES_PER_CPU, plan_resources
from curation.runner.local import run_stages
from tests.stages.retrieve import retrieval_upstream as up


def _lvd142m():
    return cfg.validate(cfg.read_yaml(cfg.resolve_pipeline_path("lvd142m")))


def test_lvd142m_at_paper_scale_fits_the_paper_cluster():
    config = _lvd142m()
    cluster = plan_cluster(config)  # ray_cluster.yaml: 20 x p3dn.24xlarge
    assert (cluster.nodes, cluster.num_cpus, cluster.num_gpus, cluster.memory_gb) == (20, 96, 8, 768)
    rows = {r.step: r for r in plan_resources(config, cluster, 1.2e9)}
    assert all(r.fits for r in rows.values()), [r.step for r in rows.values() if not r.fits]
    assert rows["embed/pool"].workers == 160 and rows["embed/pool"].asks.startswith("1 CPU, 1 GPU")
    assert rows["cluster/train"].asks == "96 CPU, 8 GPU (whole node)"
    # k-means trains on k * max_points_per_centroid = 25.6M vectors of 1280 floats, a twentieth per node;
    # the train step also reduces the others' sums.
    n_train, kd = 100_000 * 256, 100_000 * 1280
    share = n_train / 20 * 1280 * 4 + kd * 16
    assert rows["cluster/train workers"].per_worker == pytest.approx(share)
    assert rows["cluster/train workers"].workers == 19
    assert rows["cluster/train workers"].asks == "96 CPU, 8 GPU (whole node)"
    assert rows["cluster/train"].per_worker == pytest.approx(share + kd * 20 + n_train * 8)
    shards = rows["retrieve/search shards"]
    assert shards.workers == 20  # one per node by default
    per_vector = 64 + 8 + 1280 * 4  # IVF-PQ64 codes and ids, plus the exact re-ranking copy
    assert shards.per_worker == pytest.approx(GIB + per_vector * 1.2e9 * 0.62 / 20)
    assert rows["embed/pool"].hours is not None and rows["embed/pool"].hours < 48
    # The dedup graph's helpers, one per GPU, hold 1/160 of the pool each as k-NN queries (512-d float32 + a
    # 64-heap), in one query block.
    helpers = rows["dedup/graph workers"]
    assert helpers.asks == "11 CPU, 1 GPU" and helpers.workers == 160
    assert helpers.per_worker == pytest.approx(GIB + (4 * 512 + 12 * 64 + 16) * 1.2e9 / 160)
    assert rows["dedup/graph"].per_worker == pytest.approx(GIB + 100 * 0.6 * 1.2e9)
    # Their k-NN scan: 1.1B survivors, each scanning nprobe 32 of 4 sqrt(1.1B) lists, on 160 V100 at Faiss'
    # published small-list IVF-Flat rate.
    n1, nlist = 0.92 * 1.2e9, 4 * (0.92 * 1.2e9) ** 0.5
    macs = n1 * n1 * 32 / nlist * 512
    assert helpers.hours == pytest.approx(macs / (6.9e10 * 160) / 3600)
    assert 3.5 < helpers.hours < 4
    # The quantizer's k-means (20 iterations of 64 points per list) and every vector's list, GEMMs on the GPUs.
    coarse = rows["dedup/graph workers: quantizer and lists"]
    assert coarse.hours == pytest.approx((20 * 64 * nlist + 2 * n1) * nlist * 512 / (3.9e12 * 160) / 3600)
    # Hash pairs: a helper's index is searched by its own and its 80 partner ranges' codes (81 of 160 shares),
    # on its 11 CPUs at the measured rate.
    hashing = rows["dedup/graph workers: hash pairs, busiest helper"]
    assert hashing.workers == 1
    assert hashing.hours == pytest.approx(1.2e9 * 81 / 160 / (HASH_QUERIES_PER_CPU * 11) / 3600)
    # Without GPUs (the helpers as they shipped before: one per node, 90 CPUs), the CPU rates.
    config.dedup.graph.workers = {"num_cpus": 90}
    cpu = {r.step: r for r in plan_resources(config, cluster, 1.2e9, ["dedup"])}
    assert cpu["dedup/graph workers"].hours == pytest.approx(macs / (2.2e9 * 90 * 20) / 3600)
    assert 10 < cpu["dedup/graph workers"].hours < 11
    assert cpu["dedup/graph workers: quantizer and lists"].hours == pytest.approx(
        (20 * 64 * nlist + 2 * n1) * nlist * 512 / (3.3e10 * 90 * 20) / 3600
    )


def test_plan_command_prints_composition_and_resource_plan():
    text = plan_command(cfg.read_yaml(cfg.resolve_pipeline_path("lvd142m")), pool_size=1.2e9)
    assert "142,109,386" in text  # the composition is still there
    assert "resource plan at pool_size=1,200,000,000 on 20 nodes x (96 CPUs, 8 GPUs, 768 GiB)" in text
    assert "retrieve/search shards" in text and "NO:" not in text


def test_more_shards_for_a_small_cluster_and_the_knob_when_it_does_not_fit():
    config = _lvd142m()
    small = ClusterSection(nodes=4, num_cpus=32, num_gpus=0, memory_gb=256)
    with pytest.raises(ConfigError, match=r"dedup/graph workers: .*11 CPUs, 1 GPUs.*set dedup\.graph\.workers"):
        plan_resources(config, small, 1.2e9)  # lvd142m's helpers take a GPU each
    config.dedup.graph.workers = {"count": None, "num_cpus": 30}
    rows = {r.step: r for r in plan_resources(config, small, 1.2e9)}
    assert not rows["retrieve/search shards"].fits and rows["retrieve/search shards"].knob == "retrieve.shards.count"
    config.retrieve.shards.count = 64
    rows = {r.step: r for r in plan_resources(config, small, 1.2e9)}
    assert rows["retrieve/search shards"].fits


def test_run_refuses_a_plan_that_cannot_fit_before_any_work(tmp_path):
    run_dir = tmp_path / "run"
    up.build(run_dir)
    up.write_curated(run_dir, "near", up.alive_vectors()[1][:2])
    (tmp_path / "near").mkdir()
    data = up.pipeline(
        run_dir,
        [{"name": "near", "path": str(tmp_path / "near")}],
        {"datasets": [{"name": "k", "source": "near", "mode": "sample"}]},
    )
    data.update(compute={"nodes": 2, "num_cpus": 4, "memory_gb": 8}, pool_size=1e9)
    refused = r"retrieve/search shards: a worker needs .* GiB.*set retrieve\.shards\.count"
    with pytest.raises(ConfigError, match=refused):
        run_stages(run_dir, data, ["retrieve"])
    assert not (run_dir / "stages" / "retrieve").exists()
    data["pool_size"] = 1000  # the same cluster holds a small pool
    run_stages(run_dir, data, ["retrieve"])
    assert (run_dir / "stages/retrieve/_SUCCESS.json").exists()
