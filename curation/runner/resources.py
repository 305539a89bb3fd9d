"""One rule for every step's resources, decided on the cluster.

A step declares :class:`~curation.stages.base.Resources`; the runner
resolves them once per run against the cluster's nodes (``ray.nodes()``),
never against the driver's own devices:

- ``num_gpus: "auto"`` is one GPU per worker when a worker node has GPUs,
  none otherwise (a whole-node step gets every GPU of its node);
- ``whole_node`` asks for every CPU of the largest worker node (and its GPUs
  unless ``num_gpus`` is 0), reserved with a one-bundle placement group;
- a request no node can hold (CPUs, GPUs or memory) is a config error that
  names the step and the key that sets it, raised before the step starts.

Inside a worker, :func:`granted` reads what Ray actually gave (node, CPUs,
GPUs, memory) and :func:`size_thread_pools` sizes Faiss' and torch's thread
pools from it; :func:`peak_rss_bytes` is the worker's peak resident memory.
"""

from __future__ import annotations

import math
import os
import resource
import sys
from dataclasses import dataclass, field
from typing import Any

from curation.errors import ConfigError
from curation.stages.base import AUTO, Grant, Resources


@dataclass(frozen=True)
class Node:
    """A node that can run work (it declares CPUs): its resources."""

    node_id: str
    node_ip: str
    num_cpus: float
    num_gpus: float
    memory: int
    custom: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ClusterView:
    """The worker nodes of the cluster, read once; a head with no CPUs is not one."""

    nodes: tuple[Node, ...]

    @property
    def has_gpus(self) -> bool:
        return any(n.num_gpus > 0 for n in self.nodes)

    def to_dict(self) -> dict[str, Any]:
        return {"nodes": [n.__dict__ for n in self.nodes]}

    @staticmethod
    def from_dict(data: dict[str, Any]) -> ClusterView:
        return ClusterView(tuple(Node(**n) for n in data["nodes"]))


_STANDARD = {"CPU", "GPU", "memory", "object_store_memory"}


def ray_cluster() -> ClusterView:
    """The alive nodes of the connected Ray cluster that declare CPUs."""
    import ray

    nodes = []
    for n in ray.nodes():
        res = n.get("Resources", {})
        if not n.get("Alive") or res.get("CPU", 0) <= 0:
            continue
        custom = {
            k: v
            for k, v in res.items()
            if k not in _STANDARD and not k.startswith("node:") and not k.startswith("accelerator_type")
        }
        nodes.append(
            Node(
                n["NodeID"],
                n.get("NodeManagerAddress", ""),
                res.get("CPU", 0),
                res.get("GPU", 0),
                int(res.get("memory", 0)),
                custom,
            )
        )
    return ClusterView(tuple(nodes))


def local_cluster() -> ClusterView:
    """This machine as the only node (the in-process backend)."""
    gpus = 0
    try:
        import torch

        gpus = torch.cuda.device_count()
    except ImportError:  # no torch: no GPU work either
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return ClusterView((Node("local", "127.0.0.1", float(os.cpu_count() or 1), float(gpus), memory),))


@dataclass(frozen=True)
class Request:
    """A resolved request: numbers only, plus whether it takes a whole node."""

    num_cpus: float
    num_gpus: float
    memory: int
    whole_node: bool
    custom: dict[str, float]

    def ray_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}
        if self.memory:
            options["memory"] = self.memory
        if self.custom:
            options["resources"] = dict(self.custom)
        return options

    def bundle(self) -> dict[str, float]:
        bundle = {"CPU": self.num_cpus, **self.custom}
        if self.num_gpus:
            bundle["GPU"] = self.num_gpus
        if self.memory:
            bundle["memory"] = self.memory
        return bundle


def resolve(resources: Resources, cluster: ClusterView, label: str) -> Request:
    """Numbers for ``resources`` on ``cluster``; ConfigError when no node can hold them."""
    if not cluster.nodes:
        raise ConfigError(f"{label}: the cluster has no node with CPUs (a head with num_cpus: 0 and no workers?)")
    custom = dict(resources.custom)
    if resources.whole_node:
        node = max(cluster.nodes, key=lambda n: (n.num_gpus, n.num_cpus, n.memory))
        gpus = node.num_gpus if resources.num_gpus == AUTO else float(resources.num_gpus)
        request = Request(node.num_cpus, gpus, resources.memory, True, custom)
    else:
        gpus = (1.0 if cluster.has_gpus else 0.0) if resources.num_gpus == AUTO else float(resources.num_gpus)
        request = Request(float(resources.num_cpus), gpus, resources.memory, False, custom)
    _check_fits(request, cluster, label, resources.key)
    return request


def _check_fits(request: Request, cluster: ClusterView, label: str, key: str) -> None:
    def fits(n: Node) -> bool:
        return (
            n.num_cpus >= request.num_cpus
            and n.num_gpus >= request.num_gpus
            and (not n.memory or n.memory >= request.memory)
            and all(n.custom.get(k, 0) >= v for k, v in request.custom.items())
        )

    if any(fits(n) for n in cluster.nodes):
        return
    largest = max(cluster.nodes, key=lambda n: n.memory)
    knob = f"; set {key}" if key else ""
    raise ConfigError(
        f"{label}: asks per worker for {request.num_cpus:g} CPUs, {request.num_gpus:g} GPUs, "
        f"{request.memory / 2**30:.1f} GiB memory{' and ' + str(request.custom) if request.custom else ''}, "
        f"but no node has that (largest: {largest.num_cpus:g} CPUs, {largest.num_gpus:g} GPUs, "
        f"{largest.memory / 2**30:.1f} GiB){knob}"
    )


def at_once(request: Request, cluster: ClusterView, busy: Grant | None = None) -> int:
    """Workers of ``request`` that fit on the nodes at the same time, besides ``busy`` (a grant held)."""

    def per_node(node: Node) -> int:
        cpus = node.num_cpus - (busy.num_cpus if busy is not None and busy.node_id == node.node_id else 0)
        gpus = node.num_gpus - (busy.num_gpus if busy is not None and busy.node_id == node.node_id else 0)
        fits = []
        if request.num_cpus > 0:
            fits.append(math.floor(cpus / request.num_cpus))
        if request.num_gpus > 0:
            fits.append(math.floor(gpus / request.num_gpus))
        if request.memory > 0 and node.memory:
            fits.append(node.memory // request.memory)
        return max(0, min(fits)) if fits else 1 << 30

    return sum(per_node(n) for n in cluster.nodes)


def granted() -> Grant:
    """What Ray gave the calling worker (task or actor), read inside it; nothing for a driver."""
    import ray

    ctx = ray.get_runtime_context()
    try:
        assigned = ctx.get_assigned_resources()
    except AssertionError:  # the driver itself: it holds nothing
        assigned = {}
    return Grant(
        num_cpus=float(assigned.get("CPU", 0)),
        num_gpus=float(assigned.get("GPU", 0)),
        memory=int(assigned.get("memory", 0)),
        node_id=ctx.get_node_id(),
        node_ip=ray.util.get_node_ip_address(),
    )


def size_thread_pools(num_cpus: float) -> None:
    """Faiss' and torch's thread pools as wide as the granted CPUs (at least one)."""
    threads = max(1, int(num_cpus))
    os.environ["OMP_NUM_THREADS"] = str(threads)  # read by libraries imported later
    if "faiss" in sys.modules:
        sys.modules["faiss"].omp_set_num_threads(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


def peak_rss_bytes() -> int:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def usage(grant: Grant) -> dict[str, Any]:
    """The fields every stats JSON records: where the work ran and what it used."""
    return {"placement": grant.placement(), "peak_rss_bytes": peak_rss_bytes()}
