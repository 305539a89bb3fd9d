"""Expected failures as one ``curate:`` line and an exit status.

A user who interrupts a run, fills a disk or points at a stopped cluster
gets one line that says what happened and what to do; ``--debug`` adds the
traceback. Everything else (a bug) keeps its traceback.

Exit statuses: 1 run error, 2 config or usage error, 128 + N killed by signal
N (130 for Ctrl-C, 143 for SIGTERM), as shells report them.
"""

from __future__ import annotations

import errno
import signal
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from curation.errors import ConfigError, CurationError

INTERRUPTED = "interrupted; rerun the same command to resume"


class Interrupted(BaseException):
    """Raised in the main thread on SIGTERM, so that locks and Ray are released on the way out."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


# Our handlers while signals_raise() is in effect, for rearm().
_ACTIVE: dict[int, Callable] = {}


def _raise_interrupted(signum, frame):
    raise Interrupted(signum)


@contextmanager
def signals_raise() -> Iterator[None]:
    """SIGTERM (and SIGHUP) unwind the program like Ctrl-C does, instead of killing it mid-write."""
    previous = {}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) is signal.SIG_IGN:  # nohup: the user asked for it to be ignored
            continue
        try:
            previous[sig] = signal.signal(sig, _raise_interrupted)
        except ValueError:  # not the main thread (tests calling main() from a worker thread)
            pass
    _ACTIVE.update({sig: _raise_interrupted for sig in previous})
    try:
        yield
    finally:
        _ACTIVE.clear()
        for sig, old in previous.items():
            signal.signal(sig, old)


def rearm() -> None:
    """Put our handlers back after a library replaced them.

    ``ray.init`` installs a SIGTERM handler in the driver that aborts the
    process (no lock released, no cleanup); the runner calls this after
    starting Ray. Outside ``signals_raise()`` (library use) it does nothing.
    """
    for sig, handler in _ACTIVE.items():
        try:
            signal.signal(sig, handler)
        except ValueError:  # not the main thread
            pass


def run_command(command: Callable[[], int], debug: bool) -> int:
    """Run ``command``; turn the failures a user can meet into one ``curate:`` line."""
    try:
        with signals_raise():
            return command()
    except BaseException as err:  # classified below; re-raised when unexpected
        line, status = describe(err)
        if line is None:
            raise
        if debug:
            traceback.print_exc()
        print(f"curate: {line}", file=sys.stderr)
        return status


def describe(err: BaseException) -> tuple[str | None, int]:
    """The one line and exit status of an expected failure; ``(None, 0)`` for anything else."""
    if isinstance(err, SystemExit):  # an exit someone chose: passed on as it is
        return None, 0
    if isinstance(err, ConfigError):
        return f"config error: {err}", 2
    if isinstance(err, CurationError):
        return f"error: {err}", 1
    signum = _signal_of(err)
    if signum is not None:
        return INTERRUPTED, 128 + signum
    ray_line = _ray_error(err)  # before OSError: some Ray errors are TimeoutErrors
    if ray_line is not None:
        return ray_line, 1
    if isinstance(err, OSError):
        return os_error(err), 1
    if isinstance(err, MemoryError):
        return "out of memory in the driver; lower batch sizes or use a machine with more memory", 1
    return None, 0


def _signal_of(err: BaseException | None) -> int | None:
    """The signal behind an interruption, also when a library wrapped it.

    A signal that lands inside Ray's ``wait`` comes out as a SystemError
    whose cause is our exception.
    """
    seen = 0
    while err is not None and seen < 8:
        if isinstance(err, KeyboardInterrupt):
            return signal.SIGINT
        if isinstance(err, Interrupted):
            return err.signum
        err, seen = err.__cause__ or err.__context__, seen + 1
    return None


_HINTS = {
    errno.ENOSPC: "free some space or point run_dir elsewhere",
    errno.EDQUOT: "free some space or point run_dir elsewhere",
    errno.EROFS: "the file system is read-only; point run_dir at a writable one",
    errno.EACCES: "check the path's permissions",
    errno.EPERM: "check the path's permissions",
}


def os_error(err: OSError) -> str:
    """``No space left on device: /runs/x/part-000001.tar (free some space ...)``."""
    reason = err.strerror or type(err).__name__
    paths = [p for p in (err.filename, err.filename2) if p is not None]
    where = f": {' -> '.join(str(p) for p in paths)}" if paths else ""
    hint = _HINTS.get(err.errno) if err.errno is not None else None
    if isinstance(err, ConnectionError) and not paths:
        return f"connection failed: {err}"
    return f"{reason}{where}" + (f" ({hint})" if hint else "")


def _ray_error(err: BaseException) -> str | None:
    """Ray's own exceptions, and any exception raised inside Ray's code (``ray.init`` raises ValueErrors)."""
    ray = sys.modules.get("ray")
    exceptions = getattr(ray, "exceptions", None)
    if exceptions is None:
        return None
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if isinstance(err, exceptions.RayError):  # the cluster failed under the run
        return f"Ray error: {type(err).__name__}: {first} (the run is resumable: rerun the same command)"
    if _raised_in_ray(err):  # Ray refused a setting (ray.init's ValueErrors)
        return f"Ray error: {type(err).__name__}: {first}"
    return None


def _raised_in_ray(err: BaseException) -> bool:
    tb = err.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    module = tb.tb_frame.f_globals.get("__name__", "")
    return module == "ray" or module.startswith("ray.")
