"""Named plug-ins (face detectors, NSFW backends): a name -> factory registry."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from curation.errors import ConfigError


class Registry:
    def __init__(self, kind: str):
        self.kind = kind
        self._factories: dict[str, Callable[..., Any]] = {}

    def register(self, name: str):
        """Class decorator: ``@registry.register("name")``."""

        def wrap(factory):
            self._factories[name] = factory
            return factory

        return wrap

    def get(self, name: str, key: str) -> Callable[..., Any]:
        """The factory of ``name``; ConfigError naming ``key`` when unknown."""
        if name not in self._factories:
            raise ConfigError(f"{key}: unknown {self.kind} '{name}'; known: {sorted(self._factories)}")
        return self._factories[name]
