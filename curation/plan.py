"""``curate plan``: the expected composition of a pipeline (:mod:`curation.composition`) and, given a
pool size, the resources, memory and time of each step (:mod:`curation.plan_resources`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from curation.composition import MODES, PlanRow, plan_rows, totals

__all__ = ["MODES", "PlanRow", "format_plan", "plan_command", "plan_rows", "totals"]

MODE_LABELS = {"as_is": "as is", "sample": "sample", "cluster": "cluster"}


def _num(value: int | None, bound: bool = False) -> str:
    if value is None:
        return "?"
    return f"<={value:,}" if bound else f"{value:,}"


def format_plan(rows: list[PlanRow]) -> str:
    header = ("Task", "Dataset", "Images", "Retrieval", "Retrieved", "Final")
    body = [
        (
            r.task,
            r.title,
            _num(r.images),
            MODE_LABELS[r.mode],
            "-" if r.mode == "as_is" else _num(r.retrieved),
            _num(r.final, r.upper_bound),
        )
        for r in rows
    ]
    sums = totals(rows)
    bound = {m: any(r.upper_bound for r in rows if m == "total" or r.mode == m) for m in sums}
    footer = [
        ("", f"Total {MODE_LABELS[m]}", "", "", "", _num(sums[m], bound[m]))
        for m in MODES
        if any(r.mode == m for r in rows)
    ]
    footer.append(("", "Total", "", "", "", _num(sums["total"], bound["total"])))
    widths = [max(len(str(line[c])) for line in (header, *body, *footer)) for c in range(len(header))]
    right = {2, 4, 5}

    def line(cells) -> str:
        return "  ".join(
            str(v).rjust(w) if c in right else str(v).ljust(w)
            for c, (v, w) in enumerate(zip(cells, widths, strict=False))
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    out = [line(header), rule, *map(line, body), rule, *map(line, footer)]
    out += _notes(rows)
    return "\n".join(out)


def _notes(rows: list[PlanRow]) -> list[str]:
    notes = []
    if any(r.mode == "cluster" for r in rows):
        notes.append(
            "cluster rows: retrieved = expected_clusters x per_cluster, from the config "
            "(the real count depends on the data)"
        )
    if any(r.upper_bound for r in rows):
        notes.append("<=: upper bound, collisions: best keeps one copy of an image hit several times")
    if any(r.images is None for r in rows):
        notes.append("?: query-set size unknown; set 'size' in its image-set config")
    return ["", *(f"note: {n}" for n in notes)] if notes else []


def plan_command(data: dict[str, Any], pool_size: float | None = None, cluster_path: str | None = None) -> str:
    """The ``curate plan`` output for a plain pipeline dict (placeholders allowed).

    The expected composition when the pipeline retrieves; with a pool size
    (``pool_size=`` or the config's), also the resource plan on the cluster
    of ``cluster_path`` (a Ray cluster YAML), else of the config's
    ``compute:`` section, else of the project's ``ray_cluster.yaml``.
    """
    from curation import config as cfg
    from curation.errors import ConfigError

    config = cfg.validate(data)
    pool_size = pool_size or config.pool_size
    if getattr(config, "retrieve", None) is None and pool_size is None:
        raise ConfigError(
            "retrieve: the pipeline has no retrieve section, so there is nothing to plan "
            "(give pool_size=N for a resource plan)"
        )
    out = []
    if getattr(config, "retrieve", None) is not None:
        out.append(f"pipeline {config.name}: expected composition\n\n{format_plan(plan_rows(config))}")
    if pool_size is not None:
        from curation.plan_resources import format_resource_plan, plan_resources

        cluster = plan_cluster(config, cluster_path)
        out.append(format_resource_plan(plan_resources(config, cluster, pool_size), cluster, pool_size))
    return "\n\n".join(out)


def plan_cluster(config: Any, cluster_path: str | None = None):
    """The cluster a plan is for: a Ray cluster YAML, the config's ``compute:``, or ``ray_cluster.yaml``."""
    from curation.config import PIPELINES_DIR
    from curation.plan_resources import cluster_from_ray_yaml

    if cluster_path:
        return cluster_from_ray_yaml(Path(cluster_path))
    if config.compute is not None:
        return config.compute
    return cluster_from_ray_yaml(PIPELINES_DIR.parent / "ray_cluster.yaml")
