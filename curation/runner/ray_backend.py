"""Ray backend: map steps on actor pools, global steps as Ray tasks.

Each map step gets a pool of actors of class ``<Stage><Step>Worker``, named
``<stage>/<step> #<i> [<run>]`` (the dashboard's Name column), with the step's
resources; each partition is a task named ``<stage>/<step>/part-NNNNNN``; an actor
calls ``setup()`` once and then processes one partition at a time. A
partition that raises, or whose worker is lost in any way (killed by Ray's
memory monitor, actor or node death, result object lost), is retried on a
fresh attempt up to ``runner.max_partition_retries`` times, then reported
with the likely fix. A lost worker is replaced; the progress counter is a
helper whose loss only costs progress detail.
"""

from __future__ import annotations

import functools
import itertools
import logging
import uuid
from typing import Any

from curation import config as cfg
from curation.config import RayConfig, RunnerConfig
from curation.errors import ConfigError
from curation.runner.counter import Counter
from curation.runner.driver import Failure
from curation.runner.metrics import report_failure, report_global, report_partition, report_step_metrics
from curation.runner.partition import run_global_step, run_map_partition
from curation.runner.progress import Progress
from curation.runner.ray_init import failure_cause, init_ray, one_line
from curation.runner.resources import ClusterView, Request, at_once, granted, ray_cluster, resolve, size_thread_pools
from curation.runner.workers import whole_node
from curation.stages.base import GlobalStep, MapStep, Resources, StageContext
from curation.tables import partition_name

log = logging.getLogger("curation")


class PartitionWorker:
    """Holds one step's heavy state and processes partitions with it."""

    def __init__(self, run_dir: str, config_data: dict[str, Any], stage: str, step_name: str, counter=None):
        self.label = f"{stage}/{step_name}"
        self.step = _make_step(run_dir, config_data, stage, step_name)
        self.counter = counter
        self.step.grant = granted()
        size_thread_pools(self.step.grant.num_cpus)
        self.step.setup()

    def run(self, partition: int, attempt: int = 0) -> dict[str, Any]:
        import ray

        sent: list = []
        report = None
        if self.counter is not None:
            key = (self.step.ctx.stage, self.step.name, partition, attempt)
            report = lambda n: sent.append(self.counter.add.remote(key, n))  # noqa: E731
        try:
            export = functools.partial(report_step_metrics, self.step.ctx.stage, self.step.name, self.step.metrics)
            stats = run_map_partition(self.step, partition, report, export)
        finally:
            # Every report lands before the result does: none outlives the counter as a failed task.
            if sent:
                ray.wait(sent, num_returns=len(sent))
        report_partition(stats)
        return stats

    def __repr__(self) -> str:
        return f"{self.label} worker"


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.replace("-", "_").split("_"))


def _actor_class(stage: str, step: str):
    import ray

    cls = type(f"{_camel(stage)}{_camel(step)}Worker", (PartitionWorker,), {})
    return ray.remote(cls)


def _pool_size(request: Request, cluster: ClusterView, pending: int, max_workers: int | None) -> int:
    """Workers that fit on the worker nodes at once, node by node."""
    fits = [pending, at_once(request, cluster)]
    if max_workers:
        fits.append(max_workers)
    return max(1, min(fits))


class RayBackend:
    """Map steps on named actor pools, global steps as named tasks, one progress counter per run.

    Names read in the dashboard: actors ``<stage>/<step> #<i> [<run>]``, tasks
    ``<stage>/<step>/part-NNNNNN`` (map) and ``<stage>/<step>`` (global).
    """

    def __init__(self, runner_cfg: RunnerConfig, ray_cfg: RayConfig | None = None, job_name: str | None = None):
        self.max_retries = runner_cfg.max_partition_retries
        self.max_workers = runner_cfg.max_workers
        self.ray_cfg = ray_cfg
        self.job_name = job_name
        self._counter: Counter | None = None
        self._actors = itertools.count()
        self._tag = ""
        self._cluster: ClusterView | None = None

    def start(self) -> None:
        """Start or join Ray (None: the caller did, or Ray starts itself on first use)."""
        if self.ray_cfg is not None:
            init_ray(self.ray_cfg, self.job_name)

    @property
    def cluster(self) -> ClusterView:
        """The cluster's worker nodes, read once per backend (so once per run)."""
        if self._cluster is None:
            self._cluster = ray_cluster()
        return self._cluster

    def resolve(self, ctx: StageContext, label: str, resources: Resources) -> Request:
        return resolve(resources, self.cluster, f"{ctx.stage}/{label}")

    def _progress_counter(self, ctx: StageContext) -> Counter:
        if self._counter is None:
            self._tag = f"{ctx.run_dir.name}:{uuid.uuid4().hex[:6]}"
            self._counter = Counter(f"progress [{self._tag}]")
        return self._counter

    def close(self) -> None:
        """Retire the run's counter once the driver's own calls to it are done."""
        if self._counter is not None:
            self._counter.retire()
            self._counter = None

    def run_map(self, ctx: StageContext, step: MapStep, pending: list[int], progress: Progress) -> list[Failure]:
        """Run partitions on a pool of actors; a partition goes only to an actor that has started.

        A lost worker is replaced by one that starts in the background: if the
        cluster has shrunk (a node died) and it cannot be placed, the live
        workers take the queue meanwhile, so the step never waits on it.
        """
        import ray

        request = self.resolve(ctx, step.name, step.resources())
        counter = self._progress_counter(ctx)
        actor_cls = _actor_class(ctx.stage, step.name)
        idle: list[Any] = []  # started actors without a partition
        starting: dict[Any, Any] = {}  # ready ref -> actor being started
        running: dict[Any, tuple[Any, int, int]] = {}  # result ref -> (actor, partition, attempt)
        queue = [(p, 0) for p in pending]
        failures: list[Failure] = []
        done = start_failures = 0

        def spawn() -> None:
            name = f"{ctx.stage}/{step.name} #{next(self._actors)} [{self._tag}]"
            actor = actor_cls.options(name=name, **request.ray_options()).remote(
                str(ctx.run_dir), cfg.to_dict(ctx.config), ctx.stage, step.name, counter.actor
            )
            starting[actor.__ray_ready__.remote()] = actor

        for _ in range(_pool_size(request, self.cluster, len(pending), self.max_workers)):
            spawn()
        try:
            while queue or running:
                while queue and idle:
                    actor = idle.pop()
                    partition, attempt = queue.pop(0)
                    task = actor.run.options(name=f"{ctx.stage}/{step.name}/{partition_name(partition)}")
                    running[task.remote(partition, attempt)] = (actor, partition, attempt)
                ready, _ = ray.wait(list(running) + list(starting), num_returns=1, timeout=1.0)
                if not ready:
                    progress.advance_to(done + counter.in_flight(ctx.stage, step.name))
                    continue
                if ready[0] in starting:
                    actor = starting.pop(ready[0])
                    try:
                        ray.get(ready[0])
                        idle.append(actor)
                        start_failures = 0
                    except ray.exceptions.RayError as err:  # setup() raised, or its node died
                        start_failures += 1
                        self._start_failed(ctx, step, err, start_failures, queue, failures, spawn)
                    continue
                actor, partition, attempt = running.pop(ready[0])
                counter.close((ctx.stage, step.name, partition, attempt))
                try:
                    stats = ray.get(ready[0])
                except ray.exceptions.RayTaskError as err:  # the step raised; its worker is fine
                    idle.append(actor)
                    self._retry(ctx, step, partition, attempt, err.cause or err, "error", queue, failures)
                except ray.exceptions.RayError as err:  # worker killed (memory), node died, result lost
                    ray.kill(actor)  # it may live on when only the result was lost
                    spawn()
                    self._retry(ctx, step, partition, attempt, err, failure_cause(err), queue, failures)
                else:
                    idle.append(actor)
                    done += stats["rows"]
                progress.advance_to(done + counter.in_flight(ctx.stage, step.name))
        finally:
            # Idle actors have no task in flight, so killing them fails nothing.
            for actor in idle + list(starting.values()) + [a for a, _, _ in running.values()]:
                ray.kill(actor)
        return failures

    def _start_failed(self, ctx, step, err, count, queue, failures, spawn) -> None:
        """A worker that did not start: another is started, unless they keep failing (then report the queue)."""
        message = one_line(err)
        if count <= self.max_retries:
            log.warning(
                "%s/%s: a worker failed to start (%d in a row), starting another: %s",
                ctx.stage,
                step.name,
                count,
                message,
            )
            spawn()
            return
        cause = failure_cause(err)
        failures += [Failure(ctx.stage, step.name, p, f"no worker could start: {message}", cause) for p, _ in queue]
        queue.clear()

    def _retry(self, ctx, step, partition, attempt, err, cause, queue, failures) -> None:
        message = one_line(err)
        report_failure(ctx.stage, step.name)
        if attempt < self.max_retries and not isinstance(err, ConfigError):
            log.warning(
                "%s/%s partition %d failed (attempt %d), retrying: %s",
                ctx.stage,
                step.name,
                partition,
                attempt + 1,
                message,
            )
            queue.append((partition, attempt + 1))
        else:
            failures.append(Failure(ctx.stage, step.name, partition, message, cause))

    def run_global(self, ctx: StageContext, step: GlobalStep, progress: Progress) -> Failure | None:
        import ray

        request = self.resolve(ctx, step.name, step.resources())
        counter = self._progress_counter(ctx)
        # max_calls=1: a fresh worker process, so its peak RSS is this step's alone.
        task = ray.remote(max_calls=1)(_run_global)
        options = {"name": f"{ctx.stage}/{step.name}", "max_retries": 0, **request.ray_options()}
        message, cause = "", "error"
        for attempt in range(self.max_retries + 1):
            key = (ctx.stage, step.name, -1, attempt)
            try:
                with whole_node(request) as strategy:
                    placed = {"scheduling_strategy": strategy} if strategy else {}
                    args = (
                        str(ctx.run_dir),
                        cfg.to_dict(ctx.config),
                        ctx.stage,
                        step.name,
                        self.cluster.to_dict(),
                        counter.actor,
                        key,
                    )
                    _follow(task.options(**options, **placed).remote(*args), counter, key, progress)
                report_global(ctx.stage, step.name)
                return None
            except ray.exceptions.RayError as err:
                error = err.cause or err if isinstance(err, ray.exceptions.RayTaskError) else err
                cause = "error" if isinstance(err, ray.exceptions.RayTaskError) else failure_cause(err)
                message = one_line(error)
                report_failure(ctx.stage, step.name)
                log.warning("%s/%s failed (attempt %d): %s", ctx.stage, step.name, attempt + 1, message)
                if isinstance(error, ConfigError):  # retrying cannot fix the config
                    break
            finally:
                counter.close(key)
        return Failure(ctx.stage, step.name, None, message, cause)


def _follow(ref, counter: Counter, key: tuple, progress: Progress) -> Any:
    """Wait for a global step's task, moving its progress as it reports."""
    import ray

    while True:
        ready, _ = ray.wait([ref], timeout=1.0)
        reported = counter.get(key)
        # Also with nothing new: the progress file stays fresh for watchers on other nodes.
        done, total = reported if reported is not None else (progress.done, None)
        progress.advance_to(done, total)
        if ready:
            return ray.get(ref)


def _run_global(
    run_dir: str,
    config_data: dict[str, Any],
    stage: str,
    step_name: str,
    cluster: dict[str, Any],
    counter=None,
    key: tuple | None = None,
) -> dict[str, Any]:
    import ray

    from curation.runner.workers import RayWorkers

    step = _make_step(run_dir, config_data, stage, step_name)
    step.grant = granted()
    size_thread_pools(step.grant.num_cpus)
    step.workers = RayWorkers(ClusterView.from_dict(cluster), f"{_camel(stage)}{_camel(step_name)}")
    sent: list = []
    if counter is not None:
        step.progress_hook = _throttled(lambda done, total: sent.append(counter.set.remote(key, done, total)))
    try:
        return run_global_step(step)
    finally:
        if sent:
            ray.wait(sent, num_returns=len(sent))


def _throttled(send, every_s: float = 0.5):
    """``send(done, total)`` at most every ``every_s`` seconds, and always when done (a known ``total`` reached)."""
    import time

    last = [0.0]

    def hook(done: int, total: int) -> None:
        now = time.monotonic()
        if (total and done >= total) or now - last[0] >= every_s:
            last[0] = now
            send(done, total)

    return hook


def _make_step(run_dir: str, config_data: dict[str, Any], stage: str, step_name: str):
    """Rebuild a step in a worker process; validating the config imports plugins."""
    from curation.stages.registry import get_stage, stage_context

    config = cfg.validate(config_data)
    step_cls = next(s for s in get_stage(stage).steps if s.name == step_name)
    return step_cls(stage_context(config, stage, run_dir))
