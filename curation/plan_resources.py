"""``curate plan ... pool_size=N``: what each step asks for, holds and takes, on a given cluster.

For every step of a pipeline at a pool of ``N`` downloaded images, on the
cluster of a ``cluster:`` description (or a Ray cluster YAML): the resources
its workers ask for (resolved by the runner's own rule,
:func:`curation.runner.resources.resolve`), how many workers run at once,
the memory per worker and in total (formulas below, each the step's own
documented bound), and a time from measured or derived rates
(``bench/RESULTS.md``; each row names its basis). A step whose worker needs
more memory than a node has is marked and named with the knob that fixes it.

Assumptions (the paper's figures): 62 % of the pool survives dedup (744M of
1.2B); curated query sets have the sizes in their config.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from curation.config import ClusterSection
from curation.errors import ConfigError

GIB = 2**30
SURVIVING = 0.62  # LVD-142M: 744M of 1.2B images survive dedup (paper, App. A)
HASH_SURVIVING = 0.92  # assumed: the share of the pool left after the hash pass (1.1B of 1.2B)
# Assumed: the share of the pool in some hash pair, copy edge or leak edge (the 38 % removed and the images kept
# in their favour); the dedup graph process holds only these.
TOUCHED = 0.6
GRAPH_BYTES_PER_TOUCHED = 100  # union-find, representatives and decisions of a touched image (docs/dedup.md)
# Instance types of ray_cluster.yaml: vCPUs, GPUs, memory (GiB), GPU memory (GiB).
INSTANCES = {
    "p3dn.24xlarge": (96, 8, 768, 32),
    "p3.16xlarge": (64, 8, 488, 16),
    "p4d.24xlarge": (96, 8, 1152, 40),
    "r6i.8xlarge": (32, 0, 256, 0),
    "m5.8xlarge": (32, 0, 128, 0),
}
# Codes searched per CPU-second in a helper's multi-index hashing table (bench_dedup_graph.py --hash-codes).
HASH_QUERIES_PER_CPU = 7_000.0
HASH_QUERIES_NOTE = (
    "measured: 7,000 codes searched per CPU-second in a helper's 2M-code hash index (RESULTS.md, hash pairs)"
)
# Rates per worker (items/s) and where they come from.
RATES = {
    "download": (62.6, "measured: 125.3 img/s with 2 one-CPU workers (RESULTS.md, Download)"),
    "sscd_gpu": (1650.0, "derived: ResNet-50 fp16 on V100 at 320 px (RESULTS.md, Dedup projection)"),
    "sscd_cpu": (288.0, "measured: 288 img/s per core (RESULTS.md, Dedup)"),
    "graph": (
        1.2e9 / (0.2 * 3600),
        "derived: union-find of ~0.35 edges per image at >= 9M edges/s and the "
        "decision rows (RESULTS.md, Dedup projection)",
    ),
    "knn_cpu": (2.2e9, "measured: 2.2 GMAC/s per CPU in the graph helpers' scan (RESULTS.md, Distributed dedup graph)"),
    # The helpers' IVF-Flat blocks hold a few vectors per list: Faiss' small-list IVF-Flat figure, not its GEMM one.
    "knn_gpu": (
        6.9e10,
        "published: Faiss benchs/README, IVF16384,Flat nprobe 16 on SIFT1M on a Titan X: 10k queries in "
        "0.049 s = 2.55e10 MAC/s; x2.7 for a V100's memory bandwidth (900 vs 336 GB/s) [derived]",
    ),
    "gemm_gpu": (
        3.9e12,
        "published: Faiss wiki, k-means 1M x 256-d to 20k centroids, 25 it (1.28e14 MACs) in 55 s on a P100 = "
        "2.3e12 MAC/s; x1.7 for a V100's fp32 peak (15.7 vs 9.3 TF) [derived]",
    ),
    "gemm_cpu": (
        3.3e10,
        "measured: k-means 2.1e12 FLOPs (1.05e12 MACs) in 16 s on 2 cores = 3.3e10 MAC/s per CPU (RESULTS.md, k-means)",
    ),
    "hash_pairs_cpu": (HASH_QUERIES_PER_CPU, HASH_QUERIES_NOTE),
    "vith_gpu": (196.0, "derived: ViT-H/16 254.6 GFLOPs at 40 % of a V100's 125 TF fp16"),
    "vith_cpu": (0.12, "derived: ViT-B/16 1.66 img/s on 2 cores (RESULTS.md) x 35/254.6 GFLOPs"),
    "flops_gpu": (7e12, "derived: V100 fp32 15.7 TF at 45 % for Faiss k-means GEMMs"),
    "flops_cpu": (65e9, "measured: k-means 2.1e12 FLOPs in 16 s on 2 cores (RESULTS.md, k-means)"),
}


def cluster_from_ray_yaml(path: Path) -> ClusterSection:
    """The worker nodes of a Ray cluster YAML (its largest worker type, at min_workers)."""
    data = yaml.safe_load(Path(path).read_text())
    best = None
    for name, node in data.get("available_node_types", {}).items():
        if name == data.get("head_node_type") or not node.get("min_workers"):
            continue
        kind = node.get("node_config", {}).get("InstanceType")
        cpus, gpus, mem, gmem = INSTANCES.get(kind, (0, 0, 0, 0))
        res = node.get("resources") or {}
        spec = ClusterSection(
            nodes=node["min_workers"],
            num_cpus=res.get("CPU", cpus),
            num_gpus=res.get("GPU", gpus),
            memory_gb=res.get("memory", mem * GIB) / GIB,
            gpu_memory_gb=gmem,
        )
        best = spec if best is None or spec.num_gpus * spec.nodes > best.num_gpus * best.nodes else best
    if best is None:
        raise ConfigError(f"cluster: {path} has no worker node type with min_workers > 0")
    return best


@dataclass
class StepPlan:
    step: str
    asks: str
    workers: int
    per_worker: float  # bytes
    items: float  # images (or vectors) the step processes
    rate: tuple[float, str] | None  # per worker, with its basis
    knob: str = ""
    fits: bool = True

    @property
    def hours(self) -> float | None:
        if self.rate is None or not self.items:
            return None
        return self.items / (self.rate[0] * max(self.workers, 1)) / 3600


def _view(cluster: ClusterSection):
    from curation.runner.resources import ClusterView, Node

    return ClusterView(
        tuple(
            Node(f"node{i}", "", cluster.num_cpus, cluster.num_gpus, int(cluster.memory_gb * GIB))
            for i in range(cluster.nodes)
        )
    )


def _workers(request, cluster: ClusterSection, cap: int | None = None) -> int:
    per_node = [cluster.num_cpus / request.num_cpus if request.num_cpus else 1e9]
    if request.num_gpus:
        per_node.append(cluster.num_gpus / request.num_gpus)
    n = int(min(per_node)) * cluster.nodes
    return min(n, cap) if cap is not None else n


def plan_resources(
    config: Any, cluster: ClusterSection, pool_size: float, stages: list[str] | None = None
) -> list[StepPlan]:
    """One row per step of the pipeline's stages (or ``stages``) at ``pool_size`` downloaded images."""
    from curation.runner.resources import resolve
    from curation.stages.registry import get_stage, stage_context

    view, rows = _view(cluster), []
    for name in stages or config.stages:
        ctx = stage_context(config, name)
        for step_cls in get_stage(name).steps:
            step = step_cls(ctx)
            for label, resources in step.requests():
                request = resolve(resources, view, f"{name}/{label}")
                est = _estimate(config, f"{name}/{label}", request, pool_size, cluster)
                workers = 1 if est.get("single") else _workers(request, cluster, est.get("count"))
                asks = (
                    f"{request.num_cpus:g} CPU, {request.num_gpus:g} GPU"
                    + (f", {request.memory / GIB:.0f} GiB" if request.memory else "")
                    + (" (whole node)" if request.whole_node else "")
                )
                row = StepPlan(
                    f"{name}/{label}",
                    asks,
                    workers,
                    est["memory"],
                    est.get("items", 0),
                    est.get("rate"),
                    est.get("knob", ""),
                )
                row.fits = row.per_worker <= cluster.memory_gb * GIB
                rows.append(row)
                rows += [_phase(row, *phase) for phase in est.get("phases", [])]
    return rows


def _phase(row: StepPlan, name: str, items: float, rate: tuple[float, str], workers: int | None) -> StepPlan:
    """Another pass of the same workers (same request and memory): its own work and rate; ``workers``: how
    many share it (None: all of them; 1: one worker does it, the others wait)."""
    return StepPlan(
        f"{row.step}: {name}", row.asks, workers or row.workers, row.per_worker, items, rate, row.knob, row.fits
    )


# The shard plan's sample table, per output sample (docs/retrieve_shard.md, bench/RESULTS.md).
PLAN_BYTES = 550


def _output_samples(config: Any, alive: float) -> float:
    """Samples the shard stage writes: the plan's final counts where every entry has one, else the alive pool."""
    from curation.composition import plan_rows

    if getattr(config, "retrieve", None) is None:
        return alive
    finals = [r.final for r in plan_rows(config)]
    known = [f for f in finals if f is not None]
    return min(alive, sum(known)) if len(known) == len(finals) else alive


def _dim(config: Any) -> int:
    """Embedding width of the configured ViT (ViT-H's 1280 when the name does not say)."""
    arch = str(getattr(getattr(getattr(config, "embed", None), "model", None), "arch", "") or "")
    widths = {"small": 384, "base": 768, "large": 1024, "huge": 1280, "giant": 1536}
    return next((w for name, w in widths.items() if name in arch), 1280)


def _estimate(config: Any, step: str, request, n: float, cluster: Any) -> dict[str, Any]:
    """Memory per worker (bytes), items processed, rate, worker count and knob of one step."""
    gpu, nodes = request.num_gpus > 0, cluster.nodes
    alive = n * SURVIVING
    curated = sum(s.size or 0 for s in getattr(getattr(config, "embed", None), "curated", []) or [])
    dim = _dim(config)
    table: dict[str, dict[str, Any]] = {
        "download/fetch": {"memory": 1 * GIB, "items": n, "rate": RATES["download"]},
        "dedup/features": {"memory": 4 * GIB, "items": n, "rate": RATES["sscd_gpu" if gpu else "sscd_cpu"]},
        # Arrays of the touched images only (union-find, representatives, decisions); the pool is in the helpers.
        "dedup/graph": {
            "memory": 1 * GIB + GRAPH_BYTES_PER_TOUCHED * TOUCHED * n,
            "items": n,
            "rate": RATES["graph"],
            "single": True,
            "knob": "dedup.graph.memory_gb",
        },
        "dedup/table": {"memory": 1 * GIB},
        "embed/pool": {"memory": 6 * GIB, "items": alive, "rate": RATES["vith_gpu" if gpu else "vith_cpu"]},
        "embed/curated_parts": {"memory": 6 * GIB, "items": curated, "rate": RATES["vith_gpu" if gpu else "vith_cpu"]},
        "embed/curated": {"memory": 1 * GIB + 200 * curated, "single": True},
        "retrieve/mark": {"memory": 1 * GIB},
        "shard/table": {"memory": 1 * GIB},
        "shard/locate": {"memory": 1 * GIB},
        "shard/plan": {"memory": 2 * GIB + PLAN_BYTES * _output_samples(config, alive), "single": True},
        "shard/write": {"memory": 1 * GIB},
        "shard/manifest": {"memory": 1 * GIB, "single": True},
        "cluster/sizes": {"memory": 1 * GIB + 16 * n, "single": True},
    }
    if step in table:
        return table[step]
    if step == "dedup/graph workers":
        return _dedup_workers(config, request, n, nodes, nodes * cluster.num_gpus)
    if step.startswith("cluster/"):
        return _cluster(config, step, request, alive, dim, gpu, nodes)
    if step.startswith("retrieve/"):
        return _retrieve(config, step, alive, dim, curated, nodes)
    return {"memory": 1 * GIB}


def _dedup_workers(config: Any, request, n: float, nodes: int, gpus: int) -> dict[str, Any]:
    """A graph helper holds a query block of its share of the hash survivors (float32 + a k-heap).

    Work, for ``n1`` hash survivors (assumed ``HASH_SURVIVING`` of the pool) and ``nlist`` shared lists:
    the k-NN scan, ``n1 * (n1 * nprobe / nlist) * d`` multiply-adds (this row); the hash pairs, where a
    helper's index is searched by its own and its partner ranges' codes, about half the pool (the busiest
    helper sets the time: the work grows with the helper count, each code meeting half the indexes); the
    quantizer's k-means, ``20 * 64 nlist * nlist * d``, and the list of every query and stored vector,
    ``2 * n1 * nlist * d`` (GEMMs). On the helpers' GPUs when they have some, else on their CPUs.
    """
    from curation.stages.dedup.passes import TRAIN_PER_LIST

    d = config.dedup
    w = d.graph.workers
    count = w.helpers(nodes, gpus)
    per_image = 4 * d.descriptor.dims + 12 * d.copy_dedup.k + 16
    out = {
        "memory": 1 * GIB + per_image * min(n / count, w.query_block),
        "count": count,
        "knob": "dedup.graph.workers.count / dedup.graph.workers.query_block",
    }
    gpu, cpus = request.num_gpus > 0, request.num_cpus
    hashing = RATES["hash_pairs_cpu"]
    # Each helper's index is searched by its own codes and its partner ranges': count // 2 + 1 shares at most.
    busiest = n * (count // 2 + 1) / count
    out["phases"] = [("hash pairs, busiest helper", busiest, (hashing[0] * cpus, hashing[1]), 1)]
    if d.copy_on:
        n1, index, dims = n * HASH_SURVIVING, d.copy_dedup.index, d.descriptor.dims
        nlist = index.nlist or 4 * n1**0.5
        out["items"] = n1 * (n1 * min(index.nprobe, nlist) / nlist) * dims
        scan, gemm = (RATES["knn_gpu"], RATES["gemm_gpu"]) if gpu else (RATES["knn_cpu"], RATES["gemm_cpu"])
        per = request.num_gpus if gpu else cpus
        out["rate"] = (scan[0] * per, scan[1])
        coarse = (20 * TRAIN_PER_LIST * nlist + 2 * n1) * nlist * dims
        out["phases"].append(("quantizer and lists", coarse, (gemm[0] * per, gemm[1]), None))
    return out


def _cluster(config: Any, step: str, request, alive: float, dim: int, gpu: bool, nodes: int) -> dict[str, Any]:
    """Flat k-means: the sample split over ``train.workers`` (the train step holds one share and reduces).

    Per worker: its share of the sample (``n_train / workers * d * 4``) and
    ``k * d * 16`` (centroids, index, partial sums); the train step adds
    ``k * d * 20`` (running total, one arriving share, new centroids) and the
    sample's indices (``n_train * 8``). Time: Lloyd's ``2 n_train k d`` FLOPs
    per iteration over every worker's devices, on the train row.
    Hierarchical: the pool split over the workers (``n / workers * (d * 4 + 13)``
    each); the step also holds the shards' proposals (``workers * max(target,
    k_0 * sample_size) * 20`` bytes).
    """
    c = config.cluster
    rate = RATES["flops_gpu" if gpu else "flops_cpu"]
    if step not in ("cluster/train", "cluster/train workers"):
        return {"memory": 1 * GIB + c.k * dim * 4, "items": 2 * alive * c.k * dim, "rate": rate}
    workers = c.train.workers or nodes
    knob = "cluster.train.workers / cluster.max_points_per_centroid"
    if c.mode == "hierarchical":  # the pool in shards: rows, labels, scores; the level-0 k-means on a sample
        level = c.hierarchical.levels[0]  # the finest level dominates: it trains, assigns and resamples the pool
        k0, rounds = level.n_clusters, level.n_resampling_steps
        share = alive / workers * (dim * 4 + 13) + k0 * dim * 16
        if step == "cluster/train workers":
            return {"memory": share, "count": max(workers - 1, 0), "knob": knob}
        points = (
            min(alive, k0 * c.max_points_per_centroid) * c.n_iter
            + alive * (1 + rounds)
            + rounds * k0 * level.sample_size * c.n_iter
        )
        per = rate[0] * (request.num_gpus if gpu else request.num_cpus / 2) * workers
        proposals = workers * max(c.hierarchical.target_size, k0 * level.sample_size) * 20
        return {
            "memory": share + k0 * dim * 20 + proposals,
            "items": 2 * points * k0 * dim,
            "rate": (per, rate[1]),
            "single": True,
            "knob": knob,
        }
    n_train = min(alive, c.k * c.max_points_per_centroid)
    share = n_train / workers * dim * 4 + c.k * dim * 16
    if step == "cluster/train workers":
        return {"memory": share, "count": max(workers - 1, 0), "knob": knob}
    flops = 2 * n_train * c.k * dim * c.n_iter * c.n_redo
    per = rate[0] * (request.num_gpus if gpu else request.num_cpus / 2) * workers
    return {
        "memory": share + c.k * dim * 20 + n_train * 8,
        "items": flops,
        "rate": (per, rate[1]),
        "single": True,
        "knob": knob,
    }


def _retrieve(config: Any, step: str, alive: float, dim: int, curated: float, nodes: int) -> dict[str, Any]:
    r = config.retrieve
    if step == "retrieve/search":
        largest = max((s.size or 0 for s in config.embed.curated), default=0)
        return {
            "memory": 1 * GIB + largest * dim * 4 + 60 * curated * 32,
            "single": True,
            "knob": "retrieve.datasets (query sets are held whole)",
        }
    kind = r.index.kind if r.index.kind != "auto" else ("flat" if alive <= r.index.exact_max else "ivf_pq")
    refine = r.index.refine and kind in ("ivf_pq", "ivf_sq8")
    per_vector = (
        {"flat": 4 * dim, "ivf_flat": 4 * dim, "ivf_fp16": 2 * dim, "ivf_sq8": dim, "ivf_pq": r.index.pq_m or dim // 4}[
            kind
        ]
        + 8
        + (4 * dim if refine else 0)
    )
    shards = r.shards.count or nodes  # null: one per worker node
    return {"memory": 1 * GIB + per_vector * alive / shards, "count": shards, "knob": "retrieve.shards.count"}


def format_resource_plan(rows: list[StepPlan], cluster: ClusterSection, pool_size: float) -> str:
    head = (
        f"resource plan at pool_size={pool_size:,.0f} on {cluster.nodes} nodes x "
        f"({cluster.num_cpus} CPUs, {cluster.num_gpus} GPUs, {cluster.memory_gb:,.0f} GiB)"
    )
    header = ("step", "asks per worker", "workers", "GiB/worker", "GiB total", "hours", "fits")
    body = []
    for r in rows:
        hours = "?" if r.hours is None else f"{r.hours:,.1f}"
        total = r.per_worker * r.workers / GIB
        body.append(
            (
                r.step,
                r.asks,
                str(r.workers),
                f"{r.per_worker / GIB:,.1f}",
                f"{total:,.0f}",
                hours,
                "yes" if r.fits else f"NO: set {r.knob}",
            )
        )
    widths = [max(len(line[c]) for line in (header, *body)) for c in range(len(header))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip() for line in (header, *body)]
    bases = sorted({r.rate[1] for r in rows if r.rate})
    notes = [f"assumes {SURVIVING:.0%} of the pool survives dedup; hours = items / (rate x workers)"]
    notes += [f"rate: {b}" for b in bases]
    return "\n".join([head, "", *lines, "", *(f"note: {n}" for n in notes)])


def check_fits(rows: list[StepPlan]) -> None:
    """ConfigError naming the first step whose worker needs more memory than a node has."""
    for r in rows:
        if not r.fits:
            fix = f"set {r.knob}" if r.knob else "plan for nodes with more memory (compute.memory_gb)"
            raise ConfigError(f"{r.step}: a worker needs {r.per_worker / GIB:,.0f} GiB, more than a node has; {fix}")
