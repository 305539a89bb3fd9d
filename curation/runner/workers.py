"""Helper workers of global steps (index shards), and whole-node placement.

A global step that needs more than one process (the sharded pool index)
asks its ``workers`` for a group: :class:`RayWorkers` starts one Ray actor
per helper, spread over the worker nodes, each with the step's resolved
resources and thread pools sized from its grant; :class:`LocalWorkers`
makes the same objects in-process. Either way the step sees a
:class:`~curation.stages.base.WorkerGroup`: ``call`` fans a method out to
every helper and returns the results in order.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from curation.errors import ConfigError
from curation.runner.resources import ClusterView, Request, at_once, granted, resolve, size_thread_pools, usage
from curation.stages.base import Grant, Resources


class Helper:
    """Runs inside a helper actor: builds the object with its grant."""

    def __init__(self, cls: type, args: tuple):
        self.grant = granted()
        size_thread_pools(self.grant.num_cpus)
        self.obj = cls(*args, grant=self.grant)

    def call(self, method: str, *args: Any) -> Any:
        return getattr(self.obj, method)(*args)

    def info(self) -> dict[str, Any]:
        return usage(self.grant)


class RayGroup:
    def __init__(self, actors: list):
        self.actors = actors

    def call(self, method: str, args: list[tuple]) -> list[Any]:
        import ray

        return ray.get([a.call.remote(method, *arg) for a, arg in zip(self.actors, args, strict=True)])

    def imap(self, method: str, args: list[tuple]) -> Iterator[Any]:
        # Every call starts now, not when its result is read.
        refs = [a.call.remote(method, *arg) for a, arg in zip(self.actors, args, strict=True)]
        return _one_by_one(refs)

    def info(self) -> list[dict[str, Any]]:
        import ray

        return ray.get([a.info.remote() for a in self.actors])

    def stop(self) -> None:
        import ray

        for actor in self.actors:
            ray.kill(actor)
        self.actors = []


def _one_by_one(refs: list) -> Iterator[Any]:
    import ray

    for i in range(len(refs)):
        result = ray.get(refs[i])
        refs[i] = None  # the object store may free it once the caller drops the result
        yield result


class RayWorkers:
    """Starts helper actors named ``<prefix><Name>`` with resolved resources, spread over nodes."""

    def __init__(self, cluster: ClusterView, prefix: str):
        self.cluster = cluster
        self.prefix = prefix
        self.nodes = len(cluster.nodes)
        self.gpus = int(sum(n.num_gpus for n in cluster.nodes))

    def start(self, cls: type, args: list[tuple], resources: Resources, name: str) -> RayGroup:
        import ray

        request = resolve(resources, self.cluster, f"{self.prefix}/{name}")
        room = at_once(request, self.cluster, busy=granted())  # the calling step keeps its grant
        if room < len(args):
            # Ray would wait forever for the helpers that do not fit: say so instead.
            raise ConfigError(
                f"{self.prefix}/{name}: {len(args)} workers of {request.num_cpus:g} CPU, {request.num_gpus:g} GPU "
                f"do not fit the cluster at once (room for {max(room, 0)} besides this step); ask for fewer or "
                f"smaller ones{f' ({resources.key} and the count next to it)' if resources.key else ''}"
            )
        actor_cls: Any = ray.remote(type(f"{self.prefix}{name}", (Helper,), {}))
        options = {**request.ray_options(), "scheduling_strategy": "SPREAD"}
        return RayGroup([actor_cls.options(**options).remote(cls, a) for a in args])


class LocalGroup:
    def __init__(self, objects: list):
        self.objects = objects

    def call(self, method: str, args: list[tuple]) -> list[Any]:
        return [getattr(o, method)(*a) for o, a in zip(self.objects, args, strict=True)]

    def imap(self, method: str, args: list[tuple]) -> Iterator[Any]:
        for o, a in zip(self.objects, args, strict=True):
            yield getattr(o, method)(*a)

    def info(self) -> list[dict[str, Any]]:
        return [usage(Grant()) for _ in self.objects]

    def stop(self) -> None:
        self.objects = []


class LocalWorkers:
    """The same helpers as objects of this process (the in-process backend)."""

    nodes = 1
    gpus = 0  # helpers of this process run on its CPUs

    def start(self, cls: type, args: list[tuple], resources: Resources, name: str) -> LocalGroup:
        return LocalGroup([cls(*a, grant=Grant()) for a in args])


@contextlib.contextmanager
def whole_node(request: Request) -> Iterator[Any]:
    """A scheduling strategy reserving one node for a whole-node request (None otherwise).

    One bundle of every CPU (and GPU) of a node in a STRICT_PACK placement
    group: Ray keeps the node for this step until it ends.
    """
    if not request.whole_node:
        yield None
        return
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    group = placement_group([request.bundle()], strategy="STRICT_PACK")
    try:
        ray.get(group.ready())
        yield PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=0)
    finally:
        remove_placement_group(group)
