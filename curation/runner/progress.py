"""Terminal progress: one bar per step, in samples, with rate and ETA."""

from __future__ import annotations

import logging
import sys

log = logging.getLogger("curation")


class Progress:
    def __init__(self, label: str, total: int, unit: str = "sample", enabled: bool = True):
        self._bar = None
        if enabled:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total or None, desc=label, unit=unit, unit_scale=True,
                             dynamic_ncols=True, file=sys.stderr, smoothing=0.1)

    def update(self, n: int) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def advance_to(self, n: int) -> None:
        """Move the bar to ``n`` (it may go back when an attempt is abandoned)."""
        if self._bar is not None and n != self._bar.n:
            self._bar.update(n - self._bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
