"""Help text for dotted config keys, generated from the pydantic config models.

Every key a command accepts is listed with its default and the ``description``
of its ``Field``, so ``--help`` never drifts from the code that validates.
"""

from __future__ import annotations

import json
import shutil
import textwrap
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel

from curation.config import _model_of


def model_keys(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, str, str]]:
    """``(dotted key, default, description)`` of every leaf key of ``model``, in declaration order.

    A section (a nested model) is expanded; items of a list of sections are
    shown as ``key[].item``: they are set in the pipeline YAML, not one by one.
    """
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        nested = _model_of(field.annotation)
        if nested is not None:
            is_list = "list" in str(field.annotation).lower()
            yield from model_keys(nested, f"{key}[]." if is_list else f"{key}.")
            continue
        yield key, _default(field), field.description or ""


def _default(field: Any) -> str:
    if field.is_required():
        return "required"
    value = field.default_factory() if field.default_factory is not None else field.default
    return _yaml_scalar(value)


def _yaml_scalar(value: Any) -> str:
    if isinstance(value, tuple):
        value = list(value)
    text = json.dumps(value)
    return text.strip('"') if isinstance(value, str) and value and " " not in value else text


def format_keys(rows: list[tuple[str, str, str]], width: int | None = None) -> str:
    """Rows as ``  key  description [default: x]``, descriptions wrapped to the terminal."""
    width = width or min(shutil.get_terminal_size((100, 24)).columns, 120)
    column = min(max((len(k) for k, _, _ in rows), default=0) + 2, 42)
    lines = []
    for key, default, description in rows:
        text = f"{description} [default: {default}]" if description else f"[default: {default}]"
        wrapped = textwrap.wrap(text, max(width - column - 2, 30)) or [""]
        if len(key) + 2 > column:
            lines.append(f"  {key}")
            lines += [" " * (column + 2) + part for part in wrapped]
        else:
            lines.append(f"  {key:<{column}}{wrapped[0]}")
            lines += [" " * (column + 2) + part for part in wrapped[1:]]
    return "\n".join(lines)


def pipeline_keys_help() -> str:
    from curation.config import pipeline_model

    return format_keys(list(model_keys(pipeline_model())))


def train_keys_help() -> str:
    from curation.train.config import TrainConfig

    return format_keys(list(model_keys(TrainConfig)))
