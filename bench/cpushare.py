"""CPU share during a work phase: of the whole machine, and of one tool's processes.

The machine share comes from ``/proc/stat`` (busy ticks / all ticks). It
counts everything the machine runs, other users' jobs included, so on a
shared host it says little about the tool. The tool share is the CPU time
of this process and every process under it (Ray's actors, img2dataset's
workers) divided by wall time x CPUs. It is read from ``/proc/<pid>/stat``
at the start and the end only (nothing samples in between, so the meter
costs nothing): a process's own time plus the time of the children it has
reaped, so that a worker which exits in between is counted through its
parent. Linux only.
"""

from __future__ import annotations

import os
import time

TICK = os.sysconf("SC_CLK_TCK")


def _machine() -> tuple[int, int]:
    """(busy ticks, all ticks) since boot; iowait counts as idle."""
    with open("/proc/stat") as fh:
        values = [int(v) for v in fh.readline().split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def _processes() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, own + reaped children's user and system ticks) of every readable process."""
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as fh:
                text = fh.read()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()  # after the command name, which may hold spaces
        out[int(name)] = (int(fields[1]), sum(int(v) for v in fields[11:15]))
    return out


def tree_ticks(root: int, exclude: set[int]) -> dict[int, int]:
    """CPU ticks of ``root`` and its descendants, but not of ``exclude`` and theirs."""
    procs = _processes()
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in procs.items():
        children.setdefault(parent, []).append(pid)
    found, todo = {}, [root]
    while todo:
        pid = todo.pop()
        if pid in exclude or pid not in procs:
            continue
        found[pid] = procs[pid][1]
        todo += children.get(pid, [])
    return found


class CpuMeter:
    """``with CpuMeter(exclude={server_pid}) as meter: work()``; then ``meter.machine``, ``meter.tool``."""

    def __init__(self, exclude: set[int] = frozenset()):
        self.root = os.getpid()
        self.exclude = set(exclude)
        self.machine = self.tool = self.seconds = 0.0

    def __enter__(self) -> CpuMeter:
        self._ticks = tree_ticks(self.root, self.exclude)
        self._machine, self._t0 = _machine(), time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self._t0
        busy, total = (b - a for a, b in zip(self._machine, _machine(), strict=False))
        self.machine = busy / max(total, 1)
        # A process gone since the start was reaped by one still in the tree, which now counts its time.
        ticks = sum(tree_ticks(self.root, self.exclude).values()) - sum(self._ticks.values())
        self.tool = ticks / TICK / max(self.seconds * os.cpu_count(), 1e-9)
