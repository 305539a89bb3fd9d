"""The stage contract.

A stage is a small declarative unit: a name, a config model, the upstream
stages it reads, and an ordered list of steps. A step is either

- a :class:`MapStep`: per-partition work. The runner runs it on a pool of
  Ray actors with the step's resources; each actor calls :meth:`MapStep.setup`
  once (models, indexes), then for each partition feeds batches of rows to
  :meth:`MapStep.process_batch`. Every partition is committed atomically with
  a stats JSON that doubles as its completion marker; or
- a :class:`GlobalStep`: one piece of work over the whole pool (k-means
  training, a dedup graph, writing shards), run as one Ray task with its
  resources, committed as a whole.

Stages know nothing about Ray: the runner (``curation.runner``) maps them
onto it. Batches are Arrow tables; rows carry the status columns of
``curation.tables``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import pyarrow as pa

from curation import tables
from curation.atomic import tmp_name
from curation.layout import (
    FILES_SUFFIX as FILES_SUFFIX,  # re-exported: the layout's names, for steps
)
from curation.layout import STEP_DONE as STEP_DONE
from curation.layout import committed_partitions as committed_partitions
from curation.layout import files_dir as files_dir
from curation.layout import part_path as part_path
from curation.layout import partition_path as partition_path
from curation.layout import step_dir as _step_dir
from curation.layout import step_done as step_done
from curation.section import Section

AUTO = "auto"

# A step's config: the model of its stage's section (``class Features(MapStep[DedupConfig])``).
C = TypeVar("C", bound=Section)


@dataclass(frozen=True)
class Resources:
    """What one worker of a step asks for; the runner resolves it on the cluster.

    - ``num_gpus``: a number, or ``"auto"``: one GPU per worker when the
      cluster's nodes have GPUs, none otherwise (decided by the runner from
      the cluster's resources, never from the driver's own devices);
    - ``memory``: bytes reserved per worker (0: unspecified);
    - ``whole_node``: the worker gets every CPU of one worker node (and every
      GPU of it unless ``num_gpus`` is 0), for global steps whose thread
      pools should use a whole machine;
    - ``custom``: custom Ray resources per worker (``{"gpu_node": 1}``).
    """

    num_cpus: float = 1.0
    num_gpus: float | str = 0.0
    memory: int = 0
    whole_node: bool = False
    custom: tuple[tuple[str, float], ...] = ()
    # The config key that sets these resources: named when they cannot fit.
    key: str = ""


def device_gpus(device: str) -> float | str:
    """GPUs per worker for a ``device`` setting: ``cpu`` none, ``cuda`` one, ``auto`` the runner's rule."""
    return {"cpu": 0.0, "cuda": 1.0}.get(device, AUTO)


@dataclass(frozen=True)
class Grant:
    """What a worker was given: the resolved request and where it runs.

    ``num_gpus > 0`` is how a step knows it may use GPUs; ``num_cpus``
    sizes its thread pools.
    """

    num_cpus: float = 1.0
    num_gpus: float = 0.0
    memory: int = 0
    node_id: str = "local"
    node_ip: str = "127.0.0.1"

    def placement(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "node_ip": self.node_ip,
            "num_cpus": self.num_cpus,
            "num_gpus": self.num_gpus,
            "memory": self.memory,
        }


@dataclass(frozen=True)
class Metric:
    """A metric a map step counts and reports as data (:meth:`MapStep.batch_metrics`).

    The runner exports it (on Ray: ``ray_<name>``, ``ray_<name>_total`` for a
    counter, on every node's metrics endpoint), tagged ``stage`` and ``step``
    besides ``tag_keys``. A counter's reported values are increments; a
    gauge's, its current value.
    """

    name: str
    description: str
    tag_keys: tuple[str, ...] = ()
    gauge: bool = False


@dataclass
class StageContext:
    """What a step sees of the run: the validated config and where the stages' tables are.

    The runner builds it (:func:`curation.stages.registry.stage_context`), so
    that a step never looks up the registry or validates a config itself. It
    travels to workers by pickle: the config as plain data, validated again
    where it lands (see ``PipelineBase.__reduce__``).
    """

    run_dir: Path
    config: Any  # the validated pipeline config (curation.config.PipelineBase)
    stage: str
    # Every registered stage -> the step whose partitions are its table.
    table_steps: dict[str, str] = field(default_factory=dict)
    # The stages this stage reads, in order (the first is a map step's default input).
    inputs: tuple[str, ...] = ()

    @property
    def stage_config(self) -> Any:
        return getattr(self.config, self.stage)

    @property
    def seed(self) -> int:
        return self.config.seed

    def step_dir(self, step: str, stage: str | None = None) -> Path:
        return _step_dir(self.run_dir, stage or self.stage, step)

    def files_dir(self, step: str, stage: str | None = None) -> Path:
        """A map step's markers and side files (see :func:`curation.layout.files_dir`)."""
        return files_dir(self.step_dir(step, stage))

    def table_dir(self, stage: str) -> Path:
        return self.step_dir(self.table_steps[stage], stage)

    def partitions(self, stage: str) -> list[int]:
        """Committed partitions of a stage's table, in order."""
        return committed_partitions(self.table_dir(stage))

    def table_path(self, stage: str, partition: int) -> Path:
        return partition_path(self.table_dir(stage), partition, "parquet")

    def read_table(self, stage: str, columns: list[str] | None = None) -> pa.Table:
        """The whole table of a stage, partitions concatenated in order."""
        parts = [tables.read_parquet(self.table_path(stage, p), columns) for p in self.partitions(stage)]
        if not parts:
            return pa.table({})
        return pa.concat_tables(parts, promote_options="default")


class PartitionOutput:
    """Side files of one partition (tar shards, arrays), committed with it.

    ``path(suffix)`` returns a temporary path to write; the runner renames it
    to its final place (:func:`partition_path`) when the partition commits.
    Temporaries are written in the files directory, so that readers of the
    step directory never meet a half-written Parquet file.
    """

    def __init__(self, step_dir: Path, partition: int):
        self.step_dir = step_dir
        self.partition = partition
        self._files: dict[str, tuple[Path, Path]] = {}

    def final(self, suffix: str) -> Path:
        return partition_path(self.step_dir, self.partition, suffix)

    def path(self, suffix: str) -> Path:
        if suffix not in self._files:
            final = self.final(suffix)
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp_dir = files_dir(self.step_dir)
            tmp_dir.mkdir(parents=True, exist_ok=True)
            self._files[suffix] = (tmp_dir / tmp_name(final).name, final)
        return self._files[suffix][0]

    def commit(self) -> dict[str, int]:
        """Rename every written file to its final name; return sizes in bytes."""
        sizes = {}
        for tmp, final in self._files.values():
            if tmp.exists():
                tmp.replace(final)
                sizes[final.name] = final.stat().st_size
        return sizes

    def discard(self) -> None:
        for tmp, _ in self._files.values():
            tmp.unlink(missing_ok=True)


class WorkerGroup(Protocol):
    """Helper workers started for a global step (e.g. index shards), one object each."""

    def call(self, method: str, args: list[tuple]) -> list[Any]:
        """``getattr(worker_i, method)(*args[i])`` on every worker, in parallel; results in order."""

    def imap(self, method: str, args: list[tuple]) -> Iterator[Any]:
        """Like :meth:`call`, every call started before it returns, but results yielded one by one, in
        order: the caller holds one result at a time (large partial sums reduced as they arrive)."""

    def info(self) -> list[dict[str, Any]]:
        """Per worker: ``placement`` and ``peak_rss_bytes``."""

    def stop(self) -> None: ...


class Workers(Protocol):
    """How a global step starts helpers; the runner provides it (Ray actors or in-process)."""

    nodes: int  # worker nodes of the cluster
    gpus: int  # GPUs of the worker nodes, all together

    def start(self, cls: type, args: list[tuple], resources: Resources, name: str) -> WorkerGroup:
        """One ``cls(*a)`` per ``a`` in ``args``, each with ``resources``, spread over the nodes."""


class _Step(Generic[C]):
    """What every step has: a name, the run context, its config and resources.

    Steps are generic over their stage's config model, so that ``self.cfg`` is
    typed as that model: ``class Features(MapStep[DedupConfig])``.
    """

    name: ClassVar[str] = ""

    def __init__(self, ctx: StageContext):
        self.ctx = ctx
        # Set by the runner before setup()/run(): what this worker was granted.
        self.grant = Grant()
        # Set by the runner for global steps: starts helper workers (index shards).
        self.workers: Workers | None = None

    @property
    def cfg(self) -> C:
        """This stage's section of the validated config."""
        return self.ctx.stage_config

    def resources(self) -> Resources:
        return Resources()

    def requests(self) -> list[tuple[str, Resources]]:
        """Every request this step makes (its own, and its helpers'), for the check before a run."""
        return [(self.name, self.resources())]


class MapStep(_Step[C]):
    """Per-partition work; subclasses set ``name`` and ``process_batch``.

    Defaults read the partitions of the stage's first input table in batches
    of :meth:`batch_size`; the output must have one row per input row, in the
    input's order (the runner checks the keys).
    """

    # Partition i derives from partition i of the pool (the download stage); False: the step partitions
    # something else (a curated set), so a redo of it reaches every later step, not one partition.
    pool_partitions: ClassVar[bool] = True
    # Only rows still alive reach process_batch; dropped rows pass through.
    alive_only: ClassVar[bool] = True
    # What batch_metrics reports (none by default).
    metrics: ClassVar[tuple[Metric, ...]] = ()

    def batch_size(self) -> int:
        return 256

    def input_stage(self) -> str:
        return self.ctx.inputs[0]

    def partitions(self) -> list[int]:
        return self.ctx.partitions(self.input_stage())

    def num_rows(self, partition: int) -> int:
        """Rows of a partition, for progress; 0 when unknown."""
        import pyarrow.parquet as pq

        return pq.ParquetFile(self.ctx.table_path(self.input_stage(), partition)).metadata.num_rows

    def read(self, partition: int) -> Iterator[pa.Table]:
        path = self.ctx.table_path(self.input_stage(), partition)
        yield from tables.iter_batches(path, self.batch_size())

    def setup(self) -> None:
        """Load heavy state (models, indexes) once per worker."""

    def prefetch(self, batch: pa.Table) -> None:
        """Start the slow reading that ``process_batch(batch)`` will need (decoding its images, say).

        The runner calls it on the next batch before it hands the current one
        to :meth:`process_batch`, so that the two overlap. ``batch`` holds the
        rows ``process_batch`` will get: only the alive ones for an alive-only
        step; a batch without any is never prefetched, nor processed.
        """

    def open(self, partition: int, out: PartitionOutput) -> None:
        """Start a partition; side files go through ``out.path(suffix)``."""

    def process_batch(self, batch: pa.Table) -> pa.Table:
        raise NotImplementedError

    def batch_metrics(self) -> list[tuple[str, float, dict[str, str]]]:
        """``(name, value, tags)`` of :attr:`metrics` since the last call; the runner exports them after each batch."""
        return []

    def close(self) -> dict[str, Any]:
        """Finish the partition; return extra stats for its stats JSON.

        Files it wrote outside the step directory go under ``outputs`` (path
        relative to the run directory -> bytes) and ``outputs_sha256``: the
        completion check covers them, and a lost one redoes the partition.
        """
        return {}


class GlobalStep(_Step[C]):
    """Work over the whole pool, run once as a Ray task with its resources."""

    # Set by the runner: where report_progress goes (None: nowhere).
    progress_hook: Callable[[int, int], None] | None = None

    def report_progress(self, done: int, total: int) -> None:
        """Tell the runner how far :meth:`run` is, in any unit (phases, rows, shards)."""
        if self.progress_hook is not None:
            self.progress_hook(int(done), int(total))

    def run(self, out_dir: Path) -> dict[str, Any]:
        """Write this step's files under ``out_dir`` (atomically); return stats.

        Stats may hold ``sha256``: checksums already computed of files it
        wrote (paths relative to the run directory), so they are not read again.
        """
        raise NotImplementedError

    def outputs(self) -> list[Path]:
        """Files or directories written outside ``out_dir``: listed in the step's marker too."""
        return []


class Stage:
    """A named, configured sequence of steps whose last map output is its table."""

    name: ClassVar[str] = ""
    config_model: ClassVar[type[Section]] = Section
    inputs: ClassVar[tuple[str, ...]] = ()
    steps: ClassVar[tuple[type[MapStep[Any] | GlobalStep[Any]], ...]] = ()
    # The step whose per-partition Parquet files are this stage's table.
    table_step: ClassVar[str] = ""

    @classmethod
    def check(cls, config: Any) -> None:
        """Config checks that need more than types (paths exist, ...).

        Raises ``ConfigError`` naming the key; :meth:`preflight` calls it.
        """

    @classmethod
    def preflight(cls, config: Any) -> list[str]:
        """Every problem of this stage found without Ray, each naming its key ([]: none).

        The driver calls it for every selected stage with work to do, before
        Ray starts, and reports the problems of all stages together. Override
        it to add checks that cost more than :meth:`check`: models loaded and
        probed on a dummy input, inputs opened.
        """
        from curation.errors import ConfigError

        try:
            cls.check(config)
        except ConfigError as err:
            return [str(err)]
        return []


@dataclass
class Timer:
    started: float = field(default_factory=time.time)

    def stamp(self) -> dict[str, float]:
        now = time.time()
        return {"started": self.started, "finished": now, "duration_s": round(now - self.started, 3)}
