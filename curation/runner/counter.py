"""The run's progress counter: a Ray actor the map workers and global steps report to, and the driver's client.

Workers add rows as they go; the driver reads ``(done, total)`` per step for
the progress bars. Losing the actor costs progress detail, never the run.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("curation")


class ProgressCounter:
    """How far the work in flight of one run is: one actor per run, for every step.

    Map attempts, keyed ``(stage, step, partition, attempt)``, add rows batch
    by batch; a global step's attempt, keyed ``(stage, step, -1, attempt)``,
    sets ``(done, total)``. Once an attempt is closed its late reports are
    ignored, so a failed attempt's rows leave the count.
    """

    def __init__(self):
        self.rows: dict[tuple, int] = {}
        self.steps: dict[tuple, tuple[int, int]] = {}
        self.closed: set[tuple] = set()

    def add(self, key: tuple, n: int) -> None:
        if key not in self.closed:
            self.rows[key] = self.rows.get(key, 0) + n

    def set(self, key: tuple, done: int, total: int) -> None:
        if key not in self.closed:
            self.steps[key] = (done, total)

    def close(self, key: tuple) -> None:
        self.closed.add(key)
        self.rows.pop(key, None)
        self.steps.pop(key, None)

    def in_flight(self, stage: str, step: str) -> int:
        return sum(n for key, n in self.rows.items() if key[:2] == (stage, step))

    def get(self, key: tuple) -> tuple[int, int] | None:
        return self.steps.get(key)

    def __repr__(self) -> str:  # the dashboard's "Repr" column
        return "ProgressCounter"


class Counter:
    """The driver's side of the run's progress counter: its death costs progress detail, never the run."""

    def __init__(self, name: str):
        import ray

        # Any: Ray types an actor's methods as plain functions, without their ``.remote``.
        self.actor: Any = ray.remote(ProgressCounter).options(num_cpus=0, name=name).remote()

    def _ask(self, call, default):
        import ray

        if self.actor is None:
            return default
        try:
            return ray.get(call(), timeout=30)
        except ray.exceptions.RayError as err:
            log.warning("progress counter lost (%s): progress now advances per partition", type(err).__name__)
            self.actor = None
            return default

    def in_flight(self, stage: str, step: str) -> int:
        return self._ask(lambda: self.actor.in_flight.remote(stage, step), 0)

    def get(self, key: tuple) -> tuple[int, int] | None:
        return self._ask(lambda: self.actor.get.remote(key), None)

    def close(self, key: tuple) -> None:
        if self.actor is not None:
            self.actor.close.remote(key)  # a dead counter is noticed by the next question to it

    def retire(self) -> None:
        """Kill the counter once the driver's own calls to it are done (calls from one caller run in order)."""
        import ray

        if self.actor is not None:
            self._ask(lambda: self.actor.in_flight.remote("", ""), 0)
        if self.actor is not None:
            ray.kill(self.actor)
            self.actor = None
