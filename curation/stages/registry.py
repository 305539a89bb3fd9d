"""Maps ``stage=NAME`` to its :class:`~curation.stages.base.Stage` class.

Stage modules register themselves with :func:`register`; the built-in ones
are imported on first use, so a new stage needs a module and one line in
``BUILTIN``, never a change to the runner.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import Any

from curation.errors import ConfigError
from curation.stages.base import Stage, StageContext

# Built-in stages in pipeline order.
BUILTIN = ("download", "dedup", "embed", "cluster", "retrieve", "shard")

_STAGES: dict[str, type[Stage]] = {}
_loaded = False


def register(cls: type[Stage]) -> type[Stage]:
    if not cls.name or not cls.table_step:
        raise TypeError(f"{cls.__name__}: a stage needs a name and a table_step")
    _STAGES[cls.name] = cls
    return cls


def _load_builtin() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for name in BUILTIN:
        module = f"curation.stages.{name}.stage"  # each built-in stage is a folder stages/<name>/
        if importlib.util.find_spec(module) is not None:
            importlib.import_module(module)


def all_stages() -> dict[str, type[Stage]]:
    _load_builtin()
    order = {name: i for i, name in enumerate(BUILTIN)}
    return dict(sorted(_STAGES.items(), key=lambda kv: order.get(kv[0], len(order))))


def get_stage(name: str) -> type[Stage]:
    stages = all_stages()
    if name not in stages:
        import difflib

        close = difflib.get_close_matches(name, list(stages), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else f"; known stages: {', '.join(stages)}"
        raise ConfigError(f"stage: unknown stage '{name}'{hint}")
    return stages[name]


def stage_context(config: Any, stage: str, run_dir: Path | str | None = None) -> StageContext:
    """The context a step of ``stage`` runs in: the validated ``config``, the table step of every
    registered stage and the stage's inputs. ``run_dir`` defaults to ``config.run_dir``."""
    return StageContext(
        Path(config.run_dir if run_dir is None else run_dir),
        config,
        stage,
        {name: cls.table_step for name, cls in all_stages().items()},
        get_stage(stage).inputs,
    )
