"""Help text for dotted config keys, generated from the pydantic config models.

Every key a command accepts is listed with its default and the ``description``
of its ``Field``, so ``--help`` never drifts from the code that validates.
The descriptions are the single source of the key comments too: a resolved
config is printed as YAML with each description as the comment of its key
(``curate config pipeline=X defaults=true``), and shipped YAML files hold
only what differs from the defaults (:func:`restated_defaults` finds the rest).
"""

from __future__ import annotations

import json
import shutil
import textwrap
from collections.abc import Iterator
from typing import Any

import yaml
from pydantic import BaseModel, TypeAdapter

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
            is_list = _list_item_model(field.annotation) is not None
            yield from model_keys(nested, f"{key}[]." if is_list else f"{key}.")
            continue
        yield key, _default(field), field.description or ""


def _default(field: Any) -> str:
    if field.is_required():
        return "required"
    return _yaml_scalar(_default_value(field))


def _default_value(field: Any) -> Any:
    return field.default_factory() if field.default_factory is not None else field.default


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


def _list_item_model(annotation: Any) -> type[BaseModel] | None:
    """The section model of a ``list[Section]`` field (``None`` for anything else)."""
    nested = _model_of(annotation)
    return nested if nested is not None and "list" in str(annotation).lower() else None


def restated_defaults(data: dict[str, Any], model: type[BaseModel], prefix: str = "") -> Iterator[str]:
    """Dotted keys of plain YAML ``data`` whose value equals the default of ``model``.

    Values are compared as the field's type reads them (``30`` equals ``30.0``,
    ``[1, 2]`` equals ``(1, 2)``). Sections are walked key by key; items of a
    list of sections are walked too and named ``key[].item``.
    """
    for name, value in data.items():
        field = model.model_fields.get(name)
        if field is None:
            continue
        key = f"{prefix}{name}"
        item_model = _list_item_model(field.annotation)
        if item_model is not None and isinstance(value, list):
            for item in value:
                if isinstance(item, dict):
                    yield from restated_defaults(item, item_model, f"{key}[].")
            continue
        nested = _model_of(field.annotation)
        if nested is not None and isinstance(value, dict):
            yield from restated_defaults(value, nested, f"{key}.")
            continue
        if not field.is_required() and _as_read(field, value) == _as_read(field, _default_value(field)):
            yield key


def _as_read(field: Any, value: Any) -> Any:
    adapter = TypeAdapter(field.annotation)
    try:
        return adapter.dump_python(adapter.validate_python(value), mode="json")
    except ValueError:  # not a valid value: certainly not the default
        return ("invalid", repr(value))


COMMENT_COLUMN = 40


def commented_yaml(config: BaseModel, data: dict[str, Any] | None = None) -> str:
    """``config`` (every key, defaults included) as YAML, each key commented with its ``Field`` description.

    ``data`` is the plain data to print (default: ``config.model_dump(mode="json")``);
    keys absent from it (such as stage sections a pipeline does not use) are left out.
    ``yaml.safe_load`` of the text gives ``data`` back.
    """
    data = config.model_dump(mode="json") if data is None else data
    return "\n".join(_yaml_lines(data, type(config), "")) + "\n"


def _yaml_lines(data: dict[str, Any], model: type[BaseModel], indent: str, item: bool = False) -> list[str]:
    """Lines of one section; ``item``: an item of a list, its first key after ``- ``."""
    lines: list[str] = []
    for i, (name, value) in enumerate(data.items()):
        field = model.model_fields[name]
        head = f"{indent}{('- ' if i == 0 else '  ') if item else ''}{name}:"
        inner = indent + ("    " if item else "  ")
        nested = _model_of(field.annotation)
        if nested is not None and isinstance(value, dict):
            lines.append(_comment(head, field.description))
            lines += _yaml_lines(value, nested, inner)
        elif nested is not None and isinstance(value, list) and value and _list_item_model(field.annotation):
            lines.append(_comment(head, field.description))
            for entry in value:
                lines += _yaml_lines(entry, nested, inner, item=True)
        else:
            lines.append(_comment(f"{head} {_flow(value)}", field.description))
    return lines


def _comment(line: str, description: str | None) -> str:
    if not description:
        return line
    return f"{line:<{COMMENT_COLUMN - 2}}  # {' '.join(description.split())}"


def _flow(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=float("inf"), sort_keys=False).strip()
    return text.removesuffix("...").strip()
