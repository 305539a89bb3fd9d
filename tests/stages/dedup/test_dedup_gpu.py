"""The dedup helpers' GPU path, decided without a GPU: which device a helper uses given its grant and what
Faiss sees, the GPU branch running the CPU path's code with only the index placement changed, the helpers'
Ray request, and the config check before any work on a Faiss without GPU support."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from curation import config as cfg
from curation.algorithms import knn_blocks
from curation.errors import ConfigError
from tests.algorithms.test_knn_blocks import _blocks, planted_descriptors


@pytest.mark.parametrize(
    ("granted", "faiss_gpus", "gpu"),
    [(0, 0, False), (0, 8, False), (1, 0, False), (1, 1, True), (1, 8, True)],
)
def test_a_helper_searches_on_gpu_exactly_when_granted_one_and_faiss_sees_one(monkeypatch, granted, faiss_gpus, gpu):
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: faiss_gpus)
    assert knn_blocks.on_gpu(granted) is gpu


class _FakeGpu:
    """Stands in for ``faiss.index_cpu_to_gpu``: records what was placed and returns it on the host."""

    def __init__(self):
        self.placed: list[str] = []

    def __call__(self, resources, device, index):
        assert device == 0  # a helper sees its one granted GPU as device 0
        self.placed.append(type(index).__name__)
        return index


def test_the_gpu_branch_is_the_cpu_path_with_every_index_placed_on_the_gpu(monkeypatch):
    fake = _FakeGpu()
    monkeypatch.setattr(faiss, "StandardGpuResources", lambda: object(), raising=False)
    monkeypatch.setattr(faiss, "index_cpu_to_gpu", fake, raising=False)
    x, _ = planted_descriptors(600, 16, 20)
    blocks = _blocks(x, 3)
    gpu = knn_blocks.Device(gpu=True)
    flat = knn_blocks.self_graph(x[:200], 0, blocks, 8, len(x), 0.6, chunk=64)
    on_gpu = knn_blocks.self_graph(x[:200], 0, blocks, 8, len(x), 0.6, chunk=64, device=gpu)
    assert fake.placed == ["IndexFlatIP"] * 3 * 4  # every block of every query chunk (4 chunks of 64)
    for name in flat:
        np.testing.assert_array_equal(flat[name], on_gpu[name])
    centroids = knn_blocks.Coarse.train(x[::3], 8, 4).centroids
    fake.placed.clear()
    host = knn_blocks.block_topk(x[:100], blocks, 8, len(x), knn_blocks.Coarse(centroids, 4))
    placed = knn_blocks.block_topk(x[:100], blocks, 8, len(x), knn_blocks.Coarse(centroids, 4, gpu))
    assert fake.placed == ["IndexFlatIP"] + ["IndexIVFFlat"] * 3  # the quantizer once, then each block
    np.testing.assert_array_equal(host[1], placed[1])


def _lvd142m():
    return cfg.validate(cfg.read_yaml(cfg.resolve_pipeline_path("lvd142m")))


def test_helpers_ask_ray_for_their_gpu():
    from curation.stages.dedup.stage import Graph
    from curation.stages.registry import stage_context

    config = _lvd142m()
    assert config.dedup.graph.workers.num_gpus == 1
    request = dict(Graph(stage_context(config, "dedup")).requests())["graph workers"]
    assert request.num_gpus == 1
    config.dedup.graph.workers.num_gpus = 0
    assert dict(Graph(stage_context(config, "dedup")).requests())["graph workers"].num_gpus == 0


def test_helper_gpus_on_a_faiss_without_gpu_support_fail_the_config_check(monkeypatch):
    from curation.stages.dedup.checks import check_helper_gpus as _check_helper_gpus
    from curation.stages.dedup.config import DedupConfig

    monkeypatch.delattr(faiss, "StandardGpuResources", raising=False)
    _check_helper_gpus(DedupConfig())  # no GPU asked: nothing to check
    with pytest.raises(ConfigError, match=r"dedup\.graph\.workers\.num_gpus: 1, .*faiss-gpu"):
        _check_helper_gpus(DedupConfig(graph={"workers": {"num_gpus": 1}}))
    monkeypatch.setattr(faiss, "StandardGpuResources", object, raising=False)
    _check_helper_gpus(DedupConfig(graph={"workers": {"num_gpus": 1}}))


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ({"copy_dedup": {"k": 4096}}, r"dedup\.copy_dedup\.k: 4096"),
        ({"relative": {"k": 2049}}, r"dedup\.relative\.k: 2049"),
        ({"copy_dedup": {"index": {"nprobe": 3000}}}, r"dedup\.copy_dedup\.index\.nprobe: 3000"),
    ],
)
def test_a_k_or_nprobe_past_faiss_gpu_limit_fails_the_config_check_only_on_gpu(monkeypatch, section, key):
    from curation.stages.dedup.checks import check_helper_gpus as _check_helper_gpus
    from curation.stages.dedup.config import DedupConfig

    monkeypatch.setattr(faiss, "StandardGpuResources", object, raising=False)
    _check_helper_gpus(DedupConfig(**section))  # on CPUs Faiss has no such limit
    with pytest.raises(ConfigError, match=key + r", but a search on GPU .* at most 2048"):
        _check_helper_gpus(DedupConfig(**section, graph={"workers": {"num_gpus": 1}}))


def test_a_helper_granted_a_gpu_faiss_does_not_see_searches_on_cpus_and_says_so(monkeypatch, caplog):
    from curation.stages.base import Grant
    from curation.stages.dedup.shards import _device

    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 0)
    assert not _device(Grant(num_gpus=1)).gpu and "does not see" in caplog.text
    assert not _device(Grant()).gpu
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 1)
    assert _device(Grant(num_gpus=1)).gpu and not _device(Grant()).gpu


@pytest.mark.parametrize(
    ("count", "num_gpus", "nodes", "gpus", "helpers"),
    [
        (None, 0, 20, 160, 20),  # CPU helpers: one per node
        (None, 1, 20, 160, 160),  # a GPU each: one per GPU of the worker nodes
        (None, 1, 3, 0, 3),  # a GPU each, on a cluster without GPUs: one per node
        (7, 1, 20, 160, 7),  # an explicit count wins
    ],
)
def test_the_helper_count_follows_the_cluster_unless_set(count, num_gpus, nodes, gpus, helpers):
    from curation.stages.dedup.config import GraphWorkers

    workers = GraphWorkers(count=count, num_gpus=num_gpus)
    assert workers.helpers(nodes, gpus) == helpers
