"""Typed, strict pipeline configuration.

A pipeline is a YAML file in ``pipelines/``. Its top-level sections are the
run settings (``run_dir``, ``ray``, ``runner``) and one section per stage,
each validated by the config model that the stage registers. Unknown keys,
wrong types and missing values fail before any work starts, with the full
dotted key and the closest valid key.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError, create_model

from curation.errors import ConfigError
from curation.section import RUNTIME, Section
from curation.stages.registry import all_stages

PIPELINES_DIR = Path(__file__).resolve().parent.parent / "pipelines"


class RayConfig(Section):
    """Where the run executes: every field is runtime (see ``PipelineBase.ray``)."""

    address: str | None = Field(
        None,
        description="null: start a new local Ray; 'auto' (RAY_ADDRESS, else the last `ray start` here), "
        "'host:6379' or 'ray://host:10001': join that cluster",
    )
    num_cpus: int | None = Field(None, ge=1, description="CPUs of the local Ray (null: all)")
    num_gpus: int | None = Field(None, ge=0, description="GPUs of the local Ray (null: all)")
    dashboard: bool = Field(True, description="start the Ray dashboard with a local Ray")
    dashboard_port: int = Field(8265, ge=1, le=65535, description="port of the local dashboard")
    object_store_memory: int | None = Field(
        None, ge=78643200, description="bytes of the local object store (null: Ray's default)"
    )
    namespace: str = Field("curation", description="Ray namespace of the run's actors")
    connect_timeout_s: float = Field(30.0, gt=0, description="seconds to wait for the cluster at ray.address to answer")


class RunnerConfig(Section):
    """How the run executes: every field is runtime (see ``PipelineBase.runner``)."""

    max_partition_retries: int = Field(2, ge=0, description="retries of a failing partition before it is reported")
    max_workers: int | None = Field(None, ge=1, description="actors per map step (null: as many as resources allow)")
    progress: bool = Field(True, description="terminal progress bars")
    metrics: bool = Field(True, description="export per-stage counters with ray.util.metrics")


class ClusterSection(Section):
    """The worker nodes a resource plan is made for (all alike); the head runs no steps."""

    nodes: int = Field(..., ge=1, description="worker nodes")
    num_cpus: int = Field(..., ge=1, description="CPUs per node")
    num_gpus: int = Field(0, ge=0, description="GPUs per node")
    memory_gb: float = Field(..., gt=0, description="memory per node, GiB")
    gpu_memory_gb: float = Field(0, ge=0, description="memory per GPU, GiB")


class PipelineBase(Section):
    name: str = Field(..., description="pipeline name, recorded in the run and the manifest")
    run_dir: str = Field(
        ..., description="directory that holds every table, shard and manifest", json_schema_extra=RUNTIME
    )
    stages: list[str] = Field(..., min_length=1, description="stages of the pipeline, in order")
    seed: int = Field(0, description="seed of every random choice in the run")
    plugins: list[str] = Field(default_factory=list, description="python modules to import that register extra stages")
    ray: RayConfig = Field(RayConfig(), description="the Ray cluster", json_schema_extra=RUNTIME)
    runner: RunnerConfig = Field(RunnerConfig(), description="retries, workers, progress", json_schema_extra=RUNTIME)
    compute: ClusterSection | None = Field(
        None,
        description="the cluster's worker nodes, for `curate plan`; with pool_size, `curate run` checks "
        "the plan against them first",
        json_schema_extra=RUNTIME,
    )
    pool_size: float | None = Field(
        None,
        gt=0,
        description="expected downloaded images, for `curate plan` and the check before a run",
        json_schema_extra=RUNTIME,
    )

    def __reduce__(self):
        # The pipeline model is built at run time (one section per registered stage), so its class
        # cannot be pickled by name: a config travels as plain data and is validated again where it
        # lands, which imports its plugins first.
        return validate, (to_dict(self),)

    def content_hash(self) -> str:
        """:func:`content_hash` of this config, for code below this module (stages)."""
        return content_hash(self)


def pipeline_model() -> type[PipelineBase]:
    """The pipeline model with one optional section per registered stage."""
    sections: dict[str, Any] = {
        name: (stage.config_model | None, Field(None, description=_stage_description(stage)))
        for name, stage in all_stages().items()
    }
    return create_model("PipelineConfig", __base__=PipelineBase, **sections)


def _stage_description(stage: Any) -> str:
    reads = f"; reads {', '.join(stage.inputs)}" if stage.inputs else ""
    return f"the {stage.name} stage: steps {', '.join(step.name for step in stage.steps)}{reads}"


def resolve_pipeline_path(pipeline: str) -> Path:
    path = Path(pipeline)
    if path.suffix in (".yaml", ".yml") and path.exists():
        return path
    candidate = PIPELINES_DIR / f"{pipeline}.yaml"
    if candidate.exists():
        return candidate
    known = sorted(p.stem for p in PIPELINES_DIR.glob("*.yaml"))
    raise ConfigError(
        f"pipeline '{pipeline}' not found: not a YAML file, and not one of {known}" + _hint(pipeline, known)
    )


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: malformed YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys to values")
    return data


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["a.b=1", "c=x"]`` -> ``{"a.b": 1, "c": "x"}`` with YAML-typed values."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override '{item}' is not of the form dotted.key=value")
        try:
            out[key] = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as err:
            raise ConfigError(f"override '{item}': value is not valid YAML: {err}") from None
    return out


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    data = json.loads(json.dumps(data))  # deep copy of plain data
    for dotted, value in overrides.items():
        node = data
        parts = dotted.split(".")
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override '{dotted}': '{'.'.join(parts[: i + 1])}' is a value, not a section")
            node = child
        node[parts[-1]] = value
    return data


def validate(data: dict[str, Any]) -> PipelineBase:
    _import_plugins(data.get("plugins") or [])
    model = pipeline_model()
    try:
        config = model.model_validate(data)
    except ValidationError as err:
        raise ConfigError(explain(err, model)) from None
    _check_stages(config)
    return config


def load(pipeline: str, overrides: list[str] | None = None, allow_placeholders: bool = False) -> PipelineBase:
    """Read, override and validate a pipeline; placeholders left unfilled are errors too
    (unless ``allow_placeholders``: for showing a config, never for running it).

    Schema errors and placeholders are reported together, in one ConfigError.
    """
    path = resolve_pipeline_path(pipeline)
    data = read_yaml(path)
    if data.get("run_dir") == "." and path.name == "config.yaml":
        data["run_dir"] = str(path.parent)  # a run directory's saved config names its own directory
    data = apply_overrides(data, parse_overrides(overrides or []))
    problems = [] if allow_placeholders else placeholders(data)
    try:
        config = validate(data)
    except ConfigError as err:
        if not problems:
            raise
        raise ConfigError(f"{err}\n  " + "\n  ".join(problems)) from None
    if problems:
        raise ConfigError("unfilled placeholders:\n  " + "\n  ".join(problems))
    return config


def _import_plugins(modules: Any) -> None:
    import importlib

    if not isinstance(modules, list):
        raise ConfigError("plugins: expected a list of module names")
    for name in modules:
        try:
            importlib.import_module(str(name))
        except ImportError as err:
            raise ConfigError(f"plugins: cannot import '{name}': {err}") from None


def _check_stages(config: PipelineBase) -> None:
    known = list(all_stages())
    seen: set[str] = set()
    for name in config.stages:
        if name not in known:
            raise ConfigError(f"stages: unknown stage '{name}'" + _hint(name, known))
        if name in seen:
            raise ConfigError(f"stages: '{name}' is listed twice")
        seen.add(name)
        if getattr(config, name) is None:
            raise ConfigError(f"{name}: the stage is listed in 'stages' but has no '{name}' section")
    for name in known:
        if getattr(config, name) is not None and name not in seen:
            raise ConfigError(f"{name}: section given but '{name}' is not listed in 'stages'")


def explain(err: ValidationError, model: type[BaseModel]) -> str:
    lines = []
    for item in err.errors():
        loc = [str(p) for p in item["loc"]]
        key = ".".join(loc)
        if item["type"] == "extra_forbidden":
            valid = _keys_at(model, loc[:-1])
            lines.append(f"{key}: unknown key" + _hint(loc[-1], valid, prefix=".".join(loc[:-1])))
        elif item["type"] == "missing":
            lines.append(f"{key}: required value is missing")
        else:
            lines.append(f"{key}: {item['msg']} (got {item.get('input')!r})")
    return "invalid configuration:\n  " + "\n  ".join(lines)


def _keys_at(model: type[BaseModel], loc: list[str]) -> list[str]:
    for part in loc:
        field = model.model_fields.get(part)
        if field is None:
            return []
        inner = _model_of(field.annotation)
        if inner is None:
            return []
        model = inner
    return list(model.model_fields)


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def _hint(word: str, options: list[str], prefix: str = "") -> str:
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.5)
    if not close:
        return f"; valid keys: {', '.join(options)}" if options else ""
    full = f"{prefix}.{close[0]}" if prefix else close[0]
    return f"; did you mean '{full}'?"


def to_dict(config: BaseModel) -> dict[str, Any]:
    """Plain data of a config. Absent stage sections are left out, so the data
    validates in any process, whatever stages (plugins) it has registered."""
    data = config.model_dump(mode="json", exclude_none=False)
    if isinstance(config, PipelineBase):
        data = {k: v for k, v in data.items() if k in PipelineBase.model_fields or v is not None}
    return data


def runtime_keys(model: type[BaseModel] | None = None, prefix: str = "") -> set[str]:
    """Dotted keys of every field marked :data:`RUNTIME`, through nested sections.

    Fields inside lists and dicts are not walked: they are content.
    """
    model = model or pipeline_model()
    keys: set[str] = set()
    for name, field in model.model_fields.items():
        extra = field.json_schema_extra
        if isinstance(extra, dict) and extra.get("runtime"):
            keys.add(prefix + name)
            continue
        nested = _model_of(field.annotation) if not _is_container(field.annotation) else None
        if nested is not None:
            keys |= runtime_keys(nested, f"{prefix}{name}.")
    return keys


def _is_container(annotation: Any) -> bool:
    import typing

    origin = typing.get_origin(annotation)
    if origin in (list, dict, tuple, set):
        return True
    return any(_is_container(arg) for arg in typing.get_args(annotation) if typing.get_origin(arg))


def content(data: dict[str, Any]) -> dict[str, Any]:
    """Plain config data without its runtime fields: what determines the outputs."""
    data = json.loads(json.dumps(data))
    for dotted in runtime_keys():
        node: Any = data
        *parents, last = dotted.split(".")
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(last, None)
    return data


def content_hash(config: PipelineBase) -> str:
    """Hash of what determines the outputs: runtime fields (run_dir, resources, retries) excluded.

    Identical runs in different directories, or with other batch sizes and
    worker counts, get the same hash.
    """
    blob = json.dumps(content(to_dict(config)), sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


PLACEHOLDER = re.compile(r"<[A-Z][A-Z0-9_]*>")


def placeholders(data: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose value still holds a ``<PLACEHOLDER>`` to fill in."""
    if isinstance(data, dict):
        return [k for key, value in data.items() for k in placeholders(value, f"{prefix}{key}.")]
    if isinstance(data, list):
        return [k for i, value in enumerate(data) for k in placeholders(value, f"{prefix}{i}.")]
    if isinstance(data, str) and PLACEHOLDER.search(data):
        return [f"{prefix.rstrip('.')}: '{data}' is a placeholder: fill it in"]
    return []


def diff(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two plain config dicts."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        path = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            out += diff(a, b, path + ".")
        elif a != b:
            out.append(f"{path}: {a!r} -> {b!r}")
    return out
