"""Ray backend: map steps on actor pools, global steps as Ray tasks.

Each map step gets a pool of actors of class ``<Stage><Step>Worker`` (that
name is what the Ray dashboard shows) with the step's resources; an actor
calls ``setup()`` once and then processes one partition at a time. A
partition that raises, or whose actor dies, is retried on a fresh attempt up
to ``runner.max_partition_retries`` times, then reported.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any

from curation.config import RayConfig, RunnerConfig
from curation.errors import ConfigError
from curation.runner.driver import Failure
from curation.runner.metrics import report_failure, report_partition
from curation.runner.partition import run_global_step, run_map_partition
from curation.runner.progress import Progress
from curation.stages.base import GlobalStep, MapStep, Resources, StageContext

log = logging.getLogger("curation")


def init_ray(ray_cfg: RayConfig) -> dict[str, Any]:
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
        if ray_cfg.address is None:
            kwargs.update(num_cpus=ray_cfg.num_cpus, num_gpus=ray_cfg.num_gpus,
                          include_dashboard=ray_cfg.dashboard, dashboard_host="127.0.0.1",
                          dashboard_port=ray_cfg.dashboard_port,
                          object_store_memory=ray_cfg.object_store_memory)
        dashboard = getattr(ray.init(**kwargs), "dashboard_url", None) or None
        from curation.exits import rearm

        rearm()  # ray.init replaced the CLI's SIGTERM handler with one that aborts the driver
    ports = sorted({n.get("MetricsExportPort") for n in ray.nodes() if n.get("Alive")} - {None})
    log.info("Ray dashboard: %s; metrics (Prometheus) on ports %s of each node",
             f"http://{dashboard}" if dashboard else "not started here", ports)
    return {"dashboard": dashboard, "metrics_ports": ports}


class RowCounter:
    """Rows processed by the attempts in flight, reported batch by batch.

    An attempt is keyed ``(partition, attempt)``; once closed, late reports
    for it are ignored, so a failed attempt's rows leave the count.
    """

    def __init__(self):
        self.rows: dict[tuple[int, int], int] = {}
        self.closed: set[tuple[int, int]] = set()

    def add(self, key: tuple[int, int], n: int) -> None:
        if key not in self.closed:
            self.rows[key] = self.rows.get(key, 0) + n

    def close(self, key: tuple[int, int]) -> None:
        self.closed.add(key)
        self.rows.pop(key, None)

    def in_flight(self) -> int:
        return sum(self.rows.values())


class PartitionWorker:
    """Holds one step's heavy state and processes partitions with it."""

    def __init__(self, run_dir: str, config_data: dict[str, Any], stage: str, step_name: str, counter=None):
        self.step = _make_step(run_dir, config_data, stage, step_name)
        self.counter = counter
        self.step.setup()

    def run(self, partition: int, attempt: int = 0) -> dict[str, Any]:
        report = None
        if self.counter is not None:
            report = lambda n: self.counter.add.remote((partition, attempt), n)  # noqa: E731
        stats = run_map_partition(self.step, partition, report)
        report_partition(stats)
        return stats


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
    def __init__(self, runner_cfg: RunnerConfig):
        self.max_retries = runner_cfg.max_partition_retries
        self.max_workers = runner_cfg.max_workers

    def run_map(self, ctx: StageContext, step: MapStep, pending: list[int], progress: Progress) -> list[Failure]:
        import ray

        resources = step.resources()
        counter = ray.remote(RowCounter).options(num_cpus=0).remote()
        actor_cls = _actor_class(ctx.stage, step.name).options(**resources.ray_options())
        make = lambda: actor_cls.remote(str(ctx.run_dir), ctx.config_data, ctx.stage, step.name, counter)  # noqa: E731
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
                    running[actor.run.remote(partition, attempt)] = (actor, partition, attempt)
                ready, _ = ray.wait(list(running), num_returns=1, timeout=1.0)
                if not ready:
                    progress.advance_to(done + ray.get(counter.in_flight.remote()))
                    continue
                actor, partition, attempt = running.pop(ready[0])
                counter.close.remote((partition, attempt))
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
                progress.advance_to(done + ray.get(counter.in_flight.remote()))
        finally:
            for actor in actors + [a for a, _, _ in running.values()] + [counter]:
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

    def run_global(self, ctx: StageContext, step: GlobalStep) -> Failure | None:
        import ray

        task = ray.remote(_run_global).options(
            name=f"{_camel(ctx.stage)}{_camel(step.name)}Task", max_retries=0, **step.resources().ray_options()
        )
        message = ""
        for attempt in range(self.max_retries + 1):
            try:
                ray.get(task.remote(str(ctx.run_dir), ctx.config_data, ctx.stage, step.name))
                return None
            except (ray.exceptions.RayTaskError, ray.exceptions.WorkerCrashedError) as err:
                cause = getattr(err, "cause", None) or err
                message = _one_line(cause)
                report_failure(ctx.stage, step.name)
                log.warning("%s/%s failed (attempt %d): %s", ctx.stage, step.name, attempt + 1, message)
                if isinstance(cause, ConfigError):  # retrying cannot fix the config
                    break
        return Failure(ctx.stage, step.name, None, message)


def _one_line(err: BaseException) -> str:
    """First line of an error, plus its last line when that names the cause."""
    import re

    lines = [re.sub(r"\x1b\[[0-9;]*m", "", ln).strip() for ln in f"{type(err).__name__}: {err}".splitlines()]
    lines = [ln for ln in lines if ln]
    text = lines[0] if len(lines) < 2 or lines[-1] == lines[0] else f"{lines[0]} ... {lines[-1]}"
    return text[:600]


def _run_global(run_dir: str, config_data: dict[str, Any], stage: str, step_name: str) -> dict[str, Any]:
    return run_global_step(_make_step(run_dir, config_data, stage, step_name))


def _make_step(run_dir: str, config_data: dict[str, Any], stage: str, step_name: str):
    """Rebuild a step in a worker process; validating the config imports plugins."""
    from pathlib import Path

    from curation.stages.registry import get_stage

    ctx = StageContext(Path(run_dir), config_data, stage)
    ctx.config  # noqa: B018 -- imports plugin stages before the lookup
    step_cls = next(s for s in get_stage(stage).steps if s.name == step_name)
    return step_cls(ctx)
