"""Ray backend: map steps on actor pools, global steps as Ray tasks.

Each map step gets a pool of actors of class ``<Stage><Step>Worker``, named
``<stage>/<step> #<i> [<run>]`` (the dashboard's Name column), with the step's
resources; each partition is a task named ``<stage>/<step>/part-NNNNNN``; an actor
calls ``setup()`` once and then processes one partition at a time. A
partition that raises, or whose actor dies, is retried on a fresh attempt up
to ``runner.max_partition_retries`` times, then reported.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import uuid
from typing import Any

from curation.config import RayConfig, RunnerConfig
from curation.errors import ConfigError
from curation.runner.driver import Failure
from curation.runner.metrics import install_grafana_dashboard, report_failure, report_global, report_partition
from curation.runner.partition import run_global_step, run_map_partition
from curation.runner.progress import Progress
from curation.stages.base import GlobalStep, MapStep, Resources, StageContext
from curation.tables import partition_name

log = logging.getLogger("curation")


def init_ray(ray_cfg: RayConfig, job_name: str | None = None) -> dict[str, Any]:
    """Start or join Ray; returns where to watch it (dashboard, metrics ports)."""
    import ray

    dashboard = None
    if not ray.is_initialized():
        if ray_cfg.address is None:
            # A fresh local cluster with a dashboard turns token auth on, which
            # would lock the user out of their own dashboard and metrics.
            os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        kwargs: dict[str, Any] = {"address": ray_cfg.address, "namespace": ray_cfg.namespace}
        if job_name:  # shown with the job in `ray list jobs` and the dashboard's job details
            from ray.job_config import JobConfig

            kwargs["job_config"] = JobConfig(metadata={"job_name": job_name})
        if ray_cfg.address is None:
            kwargs.update(num_cpus=ray_cfg.num_cpus, num_gpus=ray_cfg.num_gpus,
                          include_dashboard=ray_cfg.dashboard, dashboard_host="127.0.0.1",
                          dashboard_port=ray_cfg.dashboard_port,
                          object_store_memory=ray_cfg.object_store_memory)
        dashboard = getattr(ray.init(**kwargs), "dashboard_url", None) or None
    ports = sorted({n.get("MetricsExportPort") for n in ray.nodes() if n.get("Alive")} - {None})
    grafana = install_grafana_dashboard()
    log.info("Ray dashboard: %s; metrics (Prometheus) on ports %s of each node%s",
             f"http://{dashboard}" if dashboard else "not started here", ports,
             f"; Grafana dashboard {grafana}" if grafana else "")
    return {"dashboard": dashboard, "metrics_ports": ports, "grafana_dashboard": grafana}


class ProgressCounter:
    """How far the work in flight of one run is: one actor per run, for every step.

    Map attempts, keyed ``(stage, step, partition, attempt)``, add rows batch
    by batch; a global step's attempt, keyed ``(stage, step, -1, attempt)``,
    sets ``(done, total)``. Once an attempt is closed its late reports are
    ignored, so a failed attempt's rows leave the count.
    """

    def __init__(self):
        self.rows: dict[tuple, int] = {}
        self.steps: dict[tuple, tuple[int, int]] = {}
        self.closed: set[tuple] = set()

    def add(self, key: tuple, n: int) -> None:
        if key not in self.closed:
            self.rows[key] = self.rows.get(key, 0) + n

    def set(self, key: tuple, done: int, total: int) -> None:
        if key not in self.closed:
            self.steps[key] = (done, total)

    def close(self, key: tuple) -> None:
        self.closed.add(key)
        self.rows.pop(key, None)
        self.steps.pop(key, None)

    def in_flight(self, stage: str, step: str) -> int:
        return sum(n for key, n in self.rows.items() if key[:2] == (stage, step))

    def get(self, key: tuple) -> tuple[int, int] | None:
        return self.steps.get(key)

    def __repr__(self) -> str:  # the dashboard's "Repr" column
        return "ProgressCounter"


class PartitionWorker:
    """Holds one step's heavy state and processes partitions with it."""

    def __init__(self, run_dir: str, config_data: dict[str, Any], stage: str, step_name: str, counter=None):
        self.label = f"{stage}/{step_name}"
        self.step = _make_step(run_dir, config_data, stage, step_name)
        self.counter = counter
        self.step.setup()

    def run(self, partition: int, attempt: int = 0) -> dict[str, Any]:
        import ray

        sent: list = []
        report = None
        if self.counter is not None:
            key = (self.step.ctx.stage, self.step.name, partition, attempt)
            report = lambda n: sent.append(self.counter.add.remote(key, n))  # noqa: E731
        try:
            stats = run_map_partition(self.step, partition, report)
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


def _pool_size(resources: Resources, pending: int, max_workers: int | None) -> int:
    import ray

    total = ray.cluster_resources()
    fits = [pending]
    if resources.num_cpus > 0:
        fits.append(math.floor(total.get("CPU", 1) / resources.num_cpus))
    if resources.num_gpus > 0:
        fits.append(math.floor(total.get("GPU", 0) / resources.num_gpus))
    if max_workers:
        fits.append(max_workers)
    return max(1, min(fits))


class RayBackend:
    """Map steps on named actor pools, global steps as named tasks, one progress counter per run.

    Names read in the dashboard: actors ``<stage>/<step> #<i> [<run>]``, tasks
    ``<stage>/<step>/part-NNNNNN`` (map) and ``<stage>/<step>`` (global).
    """

    def __init__(self, runner_cfg: RunnerConfig):
        self.max_retries = runner_cfg.max_partition_retries
        self.max_workers = runner_cfg.max_workers
        self._counter = None
        self._actors = itertools.count()
        self._tag = ""

    def _progress_counter(self, ctx: StageContext):
        import ray

        if self._counter is None:
            self._tag = f"{ctx.run_dir.name}:{uuid.uuid4().hex[:6]}"
            self._counter = ray.remote(ProgressCounter).options(
                num_cpus=0, name=f"progress [{self._tag}]").remote()
        return self._counter

    def close(self) -> None:
        """Retire the run's counter once the driver's own calls to it are done."""
        import ray

        if self._counter is not None:
            ray.get(self._counter.in_flight.remote("", ""))  # calls from one caller run in order
            ray.kill(self._counter)
            self._counter = None

    def run_map(self, ctx: StageContext, step: MapStep, pending: list[int], progress: Progress) -> list[Failure]:
        import ray

        resources = step.resources()
        counter = self._progress_counter(ctx)
        actor_cls = _actor_class(ctx.stage, step.name)

        def make():
            name = f"{ctx.stage}/{step.name} #{next(self._actors)} [{self._tag}]"
            return actor_cls.options(name=name, **resources.ray_options()).remote(
                str(ctx.run_dir), ctx.config_data, ctx.stage, step.name, counter)

        actors = [make() for _ in range(_pool_size(resources, len(pending), self.max_workers))]
        queue = [(p, 0) for p in pending]
        running: dict[Any, tuple[Any, int, int]] = {}
        failures: list[Failure] = []
        done = 0
        try:
            while queue or running:
                while queue and actors:
                    actor = actors.pop()
                    partition, attempt = queue.pop(0)
                    task = actor.run.options(name=f"{ctx.stage}/{step.name}/{partition_name(partition)}")
                    running[task.remote(partition, attempt)] = (actor, partition, attempt)
                ready, _ = ray.wait(list(running), num_returns=1, timeout=1.0)
                if not ready:
                    progress.advance_to(done + ray.get(counter.in_flight.remote(ctx.stage, step.name)))
                    continue
                actor, partition, attempt = running.pop(ready[0])
                counter.close.remote((ctx.stage, step.name, partition, attempt))
                try:
                    stats = ray.get(ready[0])
                except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError) as err:
                    actors.append(make())  # the actor died with the partition: replace it
                    self._retry(ctx, step, partition, attempt, err, queue, failures)
                except ray.exceptions.RayTaskError as err:
                    actors.append(actor)
                    self._retry(ctx, step, partition, attempt, err.cause or err, queue, failures)
                else:
                    actors.append(actor)
                    done += stats["rows"]
                progress.advance_to(done + ray.get(counter.in_flight.remote(ctx.stage, step.name)))
        finally:
            # Idle actors have no task in flight, so killing them fails nothing.
            for actor in actors + [a for a, _, _ in running.values()]:
                ray.kill(actor)
        return failures

    def _retry(self, ctx, step, partition, attempt, err, queue, failures) -> None:
        message = _one_line(err)
        report_failure(ctx.stage, step.name)
        if attempt < self.max_retries and not isinstance(err, ConfigError):
            log.warning("%s/%s partition %d failed (attempt %d), retrying: %s",
                        ctx.stage, step.name, partition, attempt + 1, message)
            queue.append((partition, attempt + 1))
        else:
            failures.append(Failure(ctx.stage, step.name, partition, message))

    def run_global(self, ctx: StageContext, step: GlobalStep, progress: Progress) -> Failure | None:
        import ray

        counter = self._progress_counter(ctx)
        task = ray.remote(_run_global).options(
            name=f"{ctx.stage}/{step.name}", max_retries=0, **step.resources().ray_options()
        )
        message = ""
        for attempt in range(self.max_retries + 1):
            key = (ctx.stage, step.name, -1, attempt)
            try:
                _follow(task.remote(str(ctx.run_dir), ctx.config_data, ctx.stage, step.name, counter, key),
                        counter, key, progress)
                report_global(ctx.stage, step.name)
                return None
            except (ray.exceptions.RayTaskError, ray.exceptions.WorkerCrashedError) as err:
                cause = getattr(err, "cause", None) or err
                message = _one_line(cause)
                report_failure(ctx.stage, step.name)
                log.warning("%s/%s failed (attempt %d): %s", ctx.stage, step.name, attempt + 1, message)
                if isinstance(cause, ConfigError):  # retrying cannot fix the config
                    break
            finally:
                counter.close.remote(key)
        return Failure(ctx.stage, step.name, None, message)


def _follow(ref, counter, key: tuple, progress: Progress) -> Any:
    """Wait for a global step's task, moving its progress as it reports."""
    import ray

    while True:
        ready, _ = ray.wait([ref], timeout=1.0)
        reported = ray.get(counter.get.remote(key))
        # Also with nothing new: the progress file stays fresh for watchers on other nodes.
        done, total = reported if reported is not None else (progress.done, None)
        progress.advance_to(done, total)
        if ready:
            return ray.get(ref)


def _one_line(err: BaseException) -> str:
    """First line of an error, plus its last line when that names the cause."""
    import re

    lines = [re.sub(r"\x1b\[[0-9;]*m", "", ln).strip() for ln in f"{type(err).__name__}: {err}".splitlines()]
    lines = [ln for ln in lines if ln]
    text = lines[0] if len(lines) < 2 or lines[-1] == lines[0] else f"{lines[0]} ... {lines[-1]}"
    return text[:600]


def _run_global(run_dir: str, config_data: dict[str, Any], stage: str, step_name: str,
                counter=None, key: tuple | None = None) -> dict[str, Any]:
    import ray

    step = _make_step(run_dir, config_data, stage, step_name)
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
    from pathlib import Path

    from curation.stages.registry import get_stage

    ctx = StageContext(Path(run_dir), config_data, stage)
    ctx.config  # noqa: B018 -- imports plugin stages before the lookup
    step_cls = next(s for s in get_stage(stage).steps if s.name == step_name)
    return step_cls(ctx)
