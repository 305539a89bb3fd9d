"""Progress of one step, for people and for other processes.

Map and global steps report the same way: the driver moves one
:class:`Progress` per step (in samples for a map step, in the step's own
units for a global step, which may set the total as it goes). Each move

- advances the terminal bar (rate and ETA from tqdm), when enabled;
- rewrites ``<step_dir>/_PROGRESS.json`` at most every few seconds (done,
  total, rate, ETA, pid): ``curate status`` reads it from another process;
- sets the ``ray_curation_step_*`` gauges (:mod:`curation.runner.metrics`).

The progress file is removed when the step closes; a step's completion is
recorded by its own markers, never by this file.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

from curation.atomic import write_json

log = logging.getLogger("curation")
WRITE_EVERY_S = 2.0


class Progress:
    def __init__(
        self,
        label: str,
        total: int,
        unit: str = "sample",
        enabled: bool = True,
        state_file: Path | None = None,
        kind: str = "map",
    ):
        self.label, self.total, self.unit, self.kind = label, total or 0, unit, kind
        self.done = 0
        self.state_file = state_file
        self.started = time.time()
        self._written = 0.0
        self._bar = None
        if enabled:
            from tqdm.auto import tqdm

            self._bar = tqdm(
                total=total or None,
                desc=label,
                unit=unit,
                unit_scale=True,
                dynamic_ncols=True,
                file=sys.stderr,
                smoothing=0.1,
            )
        self._publish(force=True)

    def update(self, n: int) -> None:
        self.advance_to(self.done + n)

    def advance_to(self, n: int, total: int | None = None) -> None:
        """Move to ``n`` (it may go back when an attempt is abandoned); ``total`` when it changed."""
        if total is not None and total != self.total:
            self.total = total
            if self._bar is not None:
                self._bar.total = total or None
                self._bar.refresh()
        if n != self.done:
            if self._bar is not None:
                self._bar.update(n - self.done)
            self.done = n
        self._publish()

    def rate(self) -> float:
        elapsed = time.time() - self.started
        return self.done / elapsed if elapsed > 0 else 0.0

    def eta_s(self) -> float | None:
        rate = self.rate()
        if not self.total or rate <= 0:
            return None
        return max(self.total - self.done, 0) / rate

    def state(self) -> dict:
        eta = self.eta_s()
        return {
            "label": self.label,
            "kind": self.kind,
            "unit": self.unit,
            "done": self.done,
            "total": self.total or None,
            "started": self.started,
            "updated": time.time(),
            "rate": round(self.rate(), 3),
            "eta_s": None if eta is None else round(eta, 1),
            "pid": os.getpid(),
        }

    def _publish(self, force: bool = False) -> None:
        now = time.time()
        if not force and now - self._written < WRITE_EVERY_S:
            return
        self._written = now
        state = self.state()
        stage, _, step = self.label.partition("/")
        from curation.runner.metrics import report_progress

        report_progress(stage, step, state)
        if self.state_file is not None:
            try:
                write_json(self.state_file, state)
            except OSError as err:  # watching is best effort: never fail the run for it
                log.debug("progress file %s: %s", self.state_file, err)

    def close(self) -> None:
        self._publish(force=True)
        stage, _, step = self.label.partition("/")
        from curation.runner.metrics import report_progress

        report_progress(stage, step, None)
        if self._bar is not None:
            self._bar.close()
        if self.state_file is not None:
            self.state_file.unlink(missing_ok=True)
