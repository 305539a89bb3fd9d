"""CPU share during a work phase: of the whole machine, and of one tool's processes.

The machine share comes from ``/proc/stat`` (busy ticks / all ticks). It
counts everything the machine runs, other users' jobs included, so on a
shared host it says little about the tool. The tool share is the CPU time
of the processes started under this one (Ray's actors, img2dataset's
workers), sampled from ``/proc/<pid>/stat`` every ``interval`` seconds
(a process that exits loses at most its last interval), divided by
wall time x CPUs. Linux only.
"""

from __future__ import annotations

import os
import threading
import time

TICK = os.sysconf("SC_CLK_TCK")


def _machine() -> tuple[int, int]:
    """(busy ticks, all ticks) since boot; iowait counts as idle."""
    with open("/proc/stat") as fh:
        values = [int(v) for v in fh.readline().split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def _processes() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, utime + stime ticks) of every readable process."""
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as fh:
                text = fh.read()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2:].split()  # after the command name, which may hold spaces
        out[int(name)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
    return out


class CpuMeter:
    """``with CpuMeter(exclude={server_pid}) as meter: work()``; then ``meter.machine``, ``meter.tool``."""

    def __init__(self, exclude: set[int] = frozenset(), interval: float = 0.25):
        self.root = os.getpid()
        self.exclude = set(exclude)
        self.interval = interval
        self._start: dict[int, int] = {}
        self._last: dict[int, int] = {}
        self._stop = threading.Event()
        self.machine = self.tool = self.seconds = 0.0

    def _descendants(self) -> dict[int, int]:
        procs = _processes()
        children: dict[int, list[int]] = {}
        for pid, (parent, _) in procs.items():
            children.setdefault(parent, []).append(pid)
        found, todo = {}, [self.root]
        while todo:
            pid = todo.pop()
            if pid in self.exclude or pid not in procs:
                continue
            found[pid] = procs[pid][1]
            todo += children.get(pid, [])
        return found

    def _sample(self) -> None:
        for pid, ticks in self._descendants().items():
            self._start.setdefault(pid, 0 if self._started else ticks)
            self._last[pid] = ticks

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> "CpuMeter":
        self._started = False
        self._sample()  # processes alive now count from here; later ones from their start
        self._started = True
        self._machine0, self._t0 = _machine(), time.perf_counter()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        self.seconds = time.perf_counter() - self._t0
        busy, total = (b - a for a, b in zip(self._machine0, _machine()))
        self.machine = busy / max(total, 1)
        ticks = sum(self._last[pid] - self._start[pid] for pid in self._last)
        self.tool = ticks / TICK / max(self.seconds * os.cpu_count(), 1e-9)
