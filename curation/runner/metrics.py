"""Per-stage counters and per-step progress gauges exported with ``ray.util.metrics``.

They appear on every node's metrics endpoint (Prometheus text, prefixed
``ray_``):

- ``ray_curation_samples_total{stage,step,status}``: samples committed, by status family;
- ``ray_curation_partitions_total{stage,step,outcome}``: partitions committed or failed (a
  global step counts as one);
- ``ray_curation_step_done{stage,step}``, ``ray_curation_step_total``: progress of the
  running step (samples for a map step, the step's own units for a global step);
- ``ray_curation_step_rate{stage,step}`` (units/s), ``ray_curation_step_eta_seconds``;
- ``ray_curation_step_running{stage,step}``: 1 while the step runs, 0 after;
- a map step's own metrics (:attr:`~curation.stages.base.MapStep.metrics`, such as the download's
  ``ray_curation_download_*``), which the step reports as data after each batch and
  :func:`report_step_metrics` exports from the worker, tagged with the stage and step.

The gauges are set by the driver from the same :class:`~curation.runner.progress.Progress`
that draws the terminal bar, so map and global steps report alike. The
Grafana dashboard ``curation/resources/grafana_dashboard.json`` charts them.
Metrics are created lazily in the process that reports, only when Ray is
initialised.
"""

from __future__ import annotations

import os
import shutil
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

GRAFANA_DASHBOARD = Path(__file__).resolve().parent.parent / "resources" / "grafana_dashboard.json"


GAUGES = {
    "done": "Units of the running step done (samples for a map step).",
    "total": "Units of the running step in all (0: not known yet).",
    "rate": "Units per second of the running step since it started.",
    "eta_seconds": "Seconds the running step still needs at its rate so far (-1: unknown).",
    "running": "1 while the step runs, 0 once it finished.",
}


def _counters() -> dict[str, Any] | None:
    """The metrics of this process, made once Ray is initialised (None before)."""
    import ray

    if not ray.is_initialized():
        return None
    return _make()


@lru_cache(maxsize=1)
def _make() -> dict[str, Any]:
    from ray.util.metrics import Counter, Gauge

    return {
        "samples": Counter(
            "curation_samples",
            description="Samples processed, by stage, step and terminal status.",
            tag_keys=("stage", "step", "status"),
        ),
        "partitions": Counter(
            "curation_partitions",
            description="Partitions finished, by stage, step and outcome.",
            tag_keys=("stage", "step", "outcome"),
        ),
        **{
            name: Gauge(f"curation_step_{name}", description=text, tag_keys=("stage", "step"))
            for name, text in GAUGES.items()
        },
    }


@cache
def _step_metric(name: str, description: str, tag_keys: tuple[str, ...], gauge: bool) -> Any:
    from ray.util.metrics import Counter, Gauge

    return (Gauge if gauge else Counter)(name, description=description, tag_keys=("stage", "step", *tag_keys))


def report_step_metrics(stage: str, step: str, metrics: tuple[Any, ...], values: list[tuple[str, float, dict]]) -> None:
    """Export what a map step reported (:meth:`~curation.stages.base.MapStep.batch_metrics`): ``(name, value,
    tags)`` of its declared ``metrics``; a counter's value is added, a gauge's set. Nothing outside Ray."""
    if not values or _counters() is None:
        return
    declared = {m.name: m for m in metrics}
    for name, value, tags in values:
        spec = declared[name]
        metric = _step_metric(spec.name, spec.description, tuple(spec.tag_keys), spec.gauge)
        tags = {"stage": stage, "step": step, **tags}
        if spec.gauge:
            metric.set(value, tags=tags)
        elif value:
            metric.inc(value, tags=tags)


def status_family(status: str) -> str:
    """``failed_download:http_404`` -> ``failed_download``: bounded tag values."""
    return status.split(":", 1)[0]


def report_partition(stats: dict[str, Any]) -> None:
    counters = _counters()
    if counters is None:
        return
    tags = {"stage": stats["stage"], "step": stats["step"]}
    families: dict[str, int] = {}
    for status, n in stats.get("counts", {}).items():
        families[status_family(status)] = families.get(status_family(status), 0) + n
    for family, n in families.items():
        counters["samples"].inc(n, tags={**tags, "status": family})
    counters["partitions"].inc(1, tags={**tags, "outcome": "committed"})


def report_global(stage: str, step: str) -> None:
    """A global step committed: it counts as one partition."""
    counters = _counters()
    if counters is not None:
        counters["partitions"].inc(1, tags={"stage": stage, "step": step, "outcome": "committed"})


def report_failure(stage: str, step: str) -> None:
    counters = _counters()
    if counters is not None:
        counters["partitions"].inc(1, tags={"stage": stage, "step": step, "outcome": "failed"})


def report_progress(stage: str, step: str, state: dict[str, Any] | None) -> None:
    """Set a step's progress gauges from a :meth:`Progress.state`; ``None``: the step stopped."""
    gauges = _counters()
    if gauges is None:
        return
    tags = {"stage": stage, "step": step}
    if state is None:
        gauges["running"].set(0, tags=tags)
        gauges["rate"].set(0, tags=tags)
        gauges["eta_seconds"].set(0, tags=tags)
        return
    eta = state.get("eta_s")
    values = {
        "done": state["done"],
        "total": state.get("total") or 0,
        "rate": state["rate"],
        "eta_seconds": -1 if eta is None else eta,
        "running": 1,
    }
    for name, value in values.items():
        gauges[name].set(value, tags=tags)


def install_grafana_dashboard() -> Path | None:
    """Copy the pipeline's Grafana dashboard beside the ones Ray generates for its head node.

    Ray's Grafana provisioning (``<session>/metrics/grafana/provisioning``, or
    ``RAY_METRICS_GRAFANA_DASHBOARD_OUTPUT_DIR``) loads every JSON of that
    folder, so a Grafana started as Ray documents lists "Curation pipeline"
    beside Ray's own dashboards. Only on the node holding that folder (the
    head); returns the copy, or None.
    """
    import ray

    node = getattr(ray._private.worker, "_global_node", None)
    folder = os.environ.get("RAY_METRICS_GRAFANA_DASHBOARD_OUTPUT_DIR")
    if not folder and node is not None:
        folder = str(Path(node.get_session_dir_path()) / "metrics" / "grafana" / "dashboards")
    if not folder or not Path(folder).is_dir():
        return None
    target = Path(folder) / "curation_grafana_dashboard.json"
    try:
        shutil.copyfile(GRAFANA_DASHBOARD, target)
    except OSError:  # a read-only session folder: the dashboard can still be imported by hand
        return None
    return target
