"""The ``key=value`` arguments of ``curate``'s commands: split, read as flags, checked."""

from __future__ import annotations

from curation.errors import ConfigError


def split(args: list[str], reserved: tuple[str, ...]) -> tuple[dict[str, str], list[str]]:
    """Reserved ``key=value`` arguments, and the rest (config overrides)."""
    picked: dict[str, str] = {}
    rest: list[str] = []
    for arg in args:
        if "=" not in arg:
            raise ConfigError(f"argument '{arg}' is not of the form key=value")
        key, _, value = arg.partition("=")
        if key in reserved:
            picked[key] = value
        else:
            rest.append(arg)
    return picked, rest


def flag(value: str | None, key: str = "") -> bool:
    if value is None:
        return False
    if value.lower() in ("1", "true", "yes"):
        return True
    if value.lower() in ("0", "false", "no"):
        return False
    raise ConfigError(f"{key + ': ' if key else ''}expected true or false, got '{value}'")


def only(command: str, picked: dict[str, str], rest: list[str], required: tuple[str, ...] = ()) -> None:
    """Refuse arguments a command does not take, and missing required ones, naming them."""
    if rest:
        raise ConfigError(f"{command}: unknown argument '{rest[0]}'; see curate {command} --help")
    for key in required:
        if key not in picked:
            raise ConfigError(f"{command}: {key}=... is required; see curate {command} --help")
