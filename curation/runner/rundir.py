"""The run directory: resolved config, config-hash check, single-runner lock.

What a run directory records is relative to itself: ``config.yaml`` holds
``run_dir: .`` and markers name files relative to their step directory, so a
run directory can be moved or copied and resumed.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Any

import yaml

from curation import config as cfg
from curation.atomic import write_bytes
from curation.errors import RunError

CONFIG_FILE = "config.yaml"
LOCK_FILE = ".lock"


def changed_sections(run_dir: Path, config: cfg.PipelineBase, force: bool) -> list[str]:
    """Top-level sections whose content differs from the run dir's config.

    Without ``force`` any difference is refused, naming what differs.
    """
    path = run_dir / CONFIG_FILE
    if not path.exists():
        return []
    old = yaml.safe_load(path.read_text()) or {}
    content = cfg.diff(cfg.content(old), cfg.content(cfg.to_dict(config)))
    if content and not force:
        raise RunError(
            f"{run_dir} was made with a different config:\n  "
            + "\n  ".join(content[:20])
            + "\nuse another run_dir, or pass force=true to redo the stages whose config changed"
        )
    return sorted({_section(d) for d in content})


def _section(diff_line: str) -> str:
    return diff_line.split(".")[0].split(":")[0]


def save_config(run_dir: Path, config: cfg.PipelineBase, force: bool) -> None:
    """Write the resolved config (after :func:`changed_sections` allowed it)."""
    changed_sections(run_dir, config, force)
    header = f"# resolved config, hash {cfg.content_hash(config)}; run_dir: the directory of this file\n"
    data = {**cfg.to_dict(config), "run_dir": "."}
    write_bytes(run_dir / CONFIG_FILE, (header + yaml.safe_dump(data, sort_keys=False)).encode())


def read_config(run_dir: Path) -> dict:
    """The config a run directory was made with, as plain data, its ``run_dir`` that directory."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.exists():
        raise RunError(f"{run_dir}: not a run directory (no {CONFIG_FILE})")
    data = yaml.safe_load(path.read_text()) or {}
    return {**data, "run_dir": str(run_dir)}


class RunLock:
    """An exclusive lock on a run dir, held for the whole run (released on exit)."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_FILE
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self.path.read_text().strip() or "another process"
            os.close(fd)
            raise RunError(
                f"{self.path.parent} is in use by a running curate ({holder}); wait for it or stop it"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}\n".encode())
        self._fd = fd
        return self

    @staticmethod
    def holder(run_dir: Path) -> str | None:
        """Who holds a run dir's lock (None: nobody); creates nothing."""
        path = Path(run_dir) / LOCK_FILE
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return path.read_text().strip() or "another process"
        finally:
            os.close(fd)  # also releases a lock taken just now
        return None

    def __exit__(self, *exc: Any) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)  # no pid: `curate status` reads the run as not running
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
