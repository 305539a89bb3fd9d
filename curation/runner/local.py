"""In-process backend: the same steps and commits as on Ray, without Ray.

Used by tests of single stages and for debugging a stage under a debugger.
"""

from __future__ import annotations

import logging
import traceback
from pathlib import Path
from typing import Any

from curation import config as cfg
from curation.errors import ConfigError
from curation.runner.driver import Failure, RunReport, run
from curation.runner.partition import run_global_step, run_map_partition
from curation.runner.progress import Progress
from curation.runner.resources import ClusterView, Request, local_cluster, resolve
from curation.runner.workers import LocalWorkers
from curation.stages.base import GlobalStep, Grant, MapStep, Resources, StageContext

log = logging.getLogger("curation")


class LocalBackend:
    """Thread pools are left as they are: the process is shared with the caller."""

    def __init__(self, max_retries: int = 0):
        self.max_retries = max_retries
        self._cluster: ClusterView | None = None

    def resolve(self, ctx: StageContext, label: str, resources: Resources) -> Request:
        if self._cluster is None:
            self._cluster = local_cluster()
        return resolve(resources, self._cluster, f"{ctx.stage}/{label}")

    def _grant(self, ctx: StageContext, step: MapStep | GlobalStep) -> Grant:
        request = self.resolve(ctx, step.name, step.resources())
        return Grant(request.num_cpus, request.num_gpus, request.memory)

    def start(self) -> None:
        """Nothing to start: work runs in this process."""

    def run_map(self, ctx: StageContext, step: MapStep, pending: list[int], progress: Progress) -> list[Failure]:
        step.grant = self._grant(ctx, step)
        step.setup()
        failures, done = [], 0

        def attempt(partition: int) -> dict[str, Any]:
            progress.advance_to(done)  # drop what an abandoned attempt counted
            return run_map_partition(step, partition, progress.update)

        for partition in pending:
            result = _attempts(lambda p=partition: attempt(p), self.max_retries)
            if isinstance(result, str):
                failures.append(Failure(ctx.stage, step.name, partition, result))
            else:
                done += result["rows"]
            progress.advance_to(done)
        return failures

    def run_global(self, ctx: StageContext, step: GlobalStep, progress: Progress) -> Failure | None:
        step.grant = self._grant(ctx, step)
        step.workers = LocalWorkers()
        step.progress_hook = lambda done, total: progress.advance_to(done, total)
        error = _attempts(lambda: run_global_step(step), self.max_retries)
        return Failure(ctx.stage, step.name, None, error) if isinstance(error, str) else None


def _attempts(fn, retries: int) -> dict[str, Any] | str:
    """Call ``fn`` up to ``retries + 1`` times; its result, or the last error."""
    last = ""
    for attempt in range(retries + 1):
        try:
            return fn()
        except Exception as err:  # a partition-tier failure: retried, then reported
            last = f"{type(err).__name__}: {err}"
            log.warning("attempt %d failed: %s\n%s", attempt + 1, last, traceback.format_exc(limit=3))
            if isinstance(err, ConfigError):  # retrying cannot fix the config
                break
    return last


def run_stages(
    run_dir: Path | str, config_data: dict[str, Any], stage_names: list[str] | None = None, force: bool = False
) -> RunReport:
    """Run stages in-process. ``config_data`` is a plain pipeline dict."""
    data = {**config_data, "run_dir": str(run_dir)}
    data.setdefault("runner", {})
    data["runner"] = {**data["runner"], "progress": False}
    config = cfg.validate(data)
    return run(config, LocalBackend(config.runner.max_partition_retries), stage_names, force)
