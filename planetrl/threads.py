"""torch's CPU threads, chosen so that a run degrades gracefully when others want the cores.

Measured on 2-core machines (``benchmarks/bench_threads.py``, docs/benchmarks.md): with the cores
free, 2 threads beat 1 (plan 57 vs 87 ms, update 320 vs 527 ms, small preset, AMD EPYC); with one
other busy process, a 2-thread OpenMP team collapses (plan 128 ms, update 995 ms: each parallel
region waits for the thread that the scheduler parked) while 1 thread keeps its idle speed (82 ms,
501 ms). ``OMP_WAIT_POLICY=passive`` does not rescue the 2-thread team (93 ms, 915 ms) and costs
2x at idle, so it is left at its default.

Hence ``threads = 0`` (auto): before each phase of a run (the C updates, a collection, an
evaluation) :class:`ThreadGovernor` counts the runnable processes outside this one and uses the
free cores, at least 1: all of them on an idle machine, fewer as soon as something else runs.
``threads = N`` fixes N. Env worker processes always use one thread (``planetrl.envs.pool``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _runnable_elsewhere(own: set[int]) -> int | None:
    """Processes in state R (running or runnable) outside ``own``; None without /proc."""
    count = 0
    try:
        entries = os.listdir("/proc")
    except OSError:
        return None
    for entry in entries:
        if not entry.isdigit() or int(entry) in own:
            continue
        try:
            text = Path("/proc", entry, "stat").read_text()
        except OSError:
            continue  # the process ended meanwhile
        # "pid (comm) S ...": the state follows the last ')' (comm may hold spaces or parens).
        state = text[text.rfind(")") + 2 : text.rfind(")") + 3]
        count += state == "R"
    return count


def busy_elsewhere(
    samples: int = 5, interval: float = 0.01, own: set[int] | None = None
) -> float | None:
    """Median number of runnable processes outside this one (and ``own``), over ``samples``
    readings ``interval`` seconds apart; None where /proc does not exist (not Linux)."""
    own = {os.getpid()} | set(own or ())
    readings = []
    for i in range(samples):
        value = _runnable_elsewhere(own)
        if value is None:
            return None
        readings.append(value)
        if i + 1 < samples:
            time.sleep(interval)
    readings.sort()
    return float(readings[len(readings) // 2])


def choose_threads(setting: int, cores: int, busy: float | None) -> tuple[int, str]:
    """(threads, reason) for ``setting`` (0 = auto, N = fixed), ``cores`` available and ``busy``
    runnable processes elsewhere (None = unknown)."""
    if setting > 0:
        return setting, f"fixed by threads={setting}"
    if busy is None:
        return cores, f"auto: {cores} cores (load unknown on this system)"
    free = max(1, cores - int(round(busy)))
    if free == cores:
        return free, f"auto: all {cores} cores free"
    return free, f"auto: {busy:g} other runnable process(es) on {cores} cores -> {free}"


class ThreadGovernor:
    """Sets torch's intra-op threads from ``setting`` (0 = auto) before each phase of a run.

    ``adjust()`` re-reads the load (a few ms) and changes the thread count only when the choice
    changes; ``own`` returns pids that belong to the run (its env workers), not counted as load.
    """

    def __init__(self, setting: int = 0, own=None) -> None:
        if setting < 0:
            raise ValueError(f"threads must be >= 0 (0 = auto), got {setting!r}")
        self.setting = setting
        self.own = own or (lambda: ())
        self.cores = available_cores()
        self.threads = torch.get_num_threads()
        self.reason = "torch default"

    def adjust(self) -> int:
        busy = None if self.setting else busy_elsewhere(own=set(self.own()))
        threads, self.reason = choose_threads(self.setting, self.cores, busy)
        if threads != torch.get_num_threads():
            torch.set_num_threads(threads)
        self.threads = threads
        return threads
