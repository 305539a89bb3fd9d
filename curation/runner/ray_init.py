"""Starting or joining Ray, and what a Ray failure means: the runner's contact with Ray itself."""

from __future__ import annotations

import logging
import os
from typing import Any

from curation.config import RayConfig
from curation.errors import ConfigError
from curation.runner.metrics import install_grafana_dashboard

log = logging.getLogger("curation")


def init_ray(ray_cfg: RayConfig, job_name: str | None = None) -> dict[str, Any]:
    """Start or join Ray; returns where to watch it (dashboard, metrics ports).

    ``address: null`` starts a new local Ray of this run's own (never one
    found on this machine); any other address is joined only once it
    answers, within ``ray.connect_timeout_s``.
    """
    import ray

    dashboard = None
    if not ray.is_initialized():
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        kwargs: dict[str, Any] = {"namespace": ray_cfg.namespace}
        if job_name:  # shown with the job in `ray list jobs` and the dashboard's job details
            from ray.job_config import JobConfig

            kwargs["job_config"] = JobConfig(metadata={"job_name": job_name})
        if ray_cfg.address is None:
            # A fresh local cluster with a dashboard turns token auth on, which
            # would lock the user out of their own dashboard and metrics.
            os.environ.setdefault("RAY_AUTH_MODE", "disabled")
            if os.environ.get("RAY_ADDRESS"):
                log.warning(
                    "RAY_ADDRESS is set but ray.address is null: starting a local Ray "
                    "(set ray.address: auto to join the cluster it names)"
                )
            kwargs.update(
                address="local",
                num_cpus=ray_cfg.num_cpus,
                num_gpus=ray_cfg.num_gpus,
                include_dashboard=ray_cfg.dashboard,
                dashboard_host="127.0.0.1",
                dashboard_port=ray_cfg.dashboard_port,
                object_store_memory=ray_cfg.object_store_memory,
            )
        else:
            kwargs["address"] = cluster_address(ray_cfg.address, ray_cfg.connect_timeout_s)
        dashboard = getattr(ray.init(**kwargs), "dashboard_url", None) or None
        from curation.exits import rearm

        rearm()  # ray.init replaced the CLI's SIGTERM handler with one that aborts the driver
    ports = sorted({n.get("MetricsExportPort") for n in ray.nodes() if n.get("Alive")} - {None})
    grafana = install_grafana_dashboard()
    log.info(
        "Ray dashboard: %s; metrics (Prometheus) on ports %s of each node%s",
        f"http://{dashboard}" if dashboard else "not started here",
        ports,
        f"; Grafana dashboard {grafana}" if grafana else "",
    )
    return {"dashboard": dashboard, "metrics_ports": ports, "grafana_dashboard": grafana}


def cluster_address(address: str, timeout_s: float) -> str:
    """The cluster ``ray.address`` names, checked to answer; ConfigError otherwise.

    ``auto`` means the cluster in ``RAY_ADDRESS``, else the one the last
    ``ray start`` on this machine recorded: never some other Ray process
    that happens to run here.
    """
    import socket

    from ray._private import services

    resolved = address
    if address == "auto":
        resolved = os.environ.get("RAY_ADDRESS") or services.find_bootstrap_address(None)
        if not resolved:
            raise ConfigError(
                "ray.address: 'auto' found no cluster (RAY_ADDRESS is not set and no `ray start` "
                "was run on this machine): start one, give its address, or set ray.address: null "
                "for a local Ray"
            )
    host, _, port = resolved.split("://", 1)[-1].rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except (OSError, ValueError) as err:
        raise ConfigError(
            f"ray.address: no Ray cluster answers at '{resolved}' within {timeout_s:g} s "
            f"({type(err).__name__}: {err}): start it (`ray start --head`), fix the address, "
            "or set ray.address: null for a local Ray"
        ) from None
    return resolved


def failure_cause(err: BaseException) -> str:
    """Why a unit's worker failed: "memory" (killed for memory), "died" (worker, node or object lost),
    "error" (the step's own setup raised in a new worker)."""
    import ray

    if isinstance(err, ray.exceptions.RayActorError) and err.actor_init_failed:
        return "error"
    text = str(err)
    # An actor killed for memory surfaces as ActorDiedError; only its text says why.
    if isinstance(err, ray.exceptions.OutOfMemoryError) or any(
        s in text for s in ("running low on memory", "OutOfMemoryError")
    ):
        return "memory"
    return "died"


def one_line(err: BaseException) -> str:
    """First line of an error, plus its last line when that names the cause."""
    import re

    usage = re.search(r"was ([\d.]+\s*[KMGT]?B) used / ([\d.]+\s*[KMGT]?B) limit", str(err))
    if failure_cause(err) == "memory" and usage:  # Ray's own text is a page long
        return (
            f"{type(err).__name__}: the worker was killed by Ray's memory monitor "
            f"(node memory {usage.group(1)} used of {usage.group(2)})"
        )
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", ln).strip() for ln in f"{type(err).__name__}: {err}".splitlines()]
    lines = [ln for ln in lines if ln]
    text = lines[0] if len(lines) < 2 or lines[-1] == lines[0] else f"{lines[0]} ... {lines[-1]}"
    return text[:600]
