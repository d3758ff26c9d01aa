"""Measuring a cell: the process tree's memory and CPU, and latency percentiles.

A cell's engine may run in many processes (workers, a JVM, a Ray raylet),
all started below the cell's own process. `TreeSampler` walks that tree on a
background thread and keeps, for the current window, the peak of the summed
resident memory and the CPU seconds each process spent.

    >>> percentiles([0.1, 0.2, 0.3, 0.4])["latency_p50_s"]
    0.25
    >>> percentiles([])["latency_p50_s"] is None
    True
"""

from __future__ import annotations

import os
import threading

import psutil


def percentiles(samples: list[float]) -> dict:
    """p50/p90/p99/max of latency samples (linear interpolation), None when there are none."""
    keys = ("latency_p50_s", "latency_p90_s", "latency_p99_s", "latency_max_s")
    if not samples:
        return dict.fromkeys(keys) | {"latency_count": 0}
    xs = sorted(samples)

    def q(p: float) -> float:
        pos = p * (len(xs) - 1)
        lo = int(pos)
        hi = min(lo + 1, len(xs) - 1)
        return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)

    return dict(zip(keys, (q(0.5), q(0.9), q(0.99), xs[-1]))) | {"latency_count": len(xs)}


class TreeSampler:
    """Samples this process and all its descendants every ``interval`` seconds.

    State: ``_cpu_start[pid]`` -- CPU seconds of pid when the window opened
    (0 for a process born later); ``_cpu_last[pid]`` -- the latest reading;
    ``_peak`` -- the largest summed RSS seen in the window.
    """

    def __init__(self, interval: float = 0.05):
        self.interval = interval
        self._root = psutil.Process(os.getpid())
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._procs: dict[int, psutil.Process] = {}
        self._cpu_start: dict[int, float] = {}
        self._cpu_last: dict[int, float] = {}
        self._peak = 0
        self._thread = threading.Thread(target=self._loop, name="tree-sampler", daemon=True)

    def __enter__(self):
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def sample(self) -> None:
        """Read every process of the tree once. Mutates the window's state."""
        try:
            tree = [self._root, *self._root.children(recursive=True)]
        except psutil.Error:
            return
        rss = 0
        readings = {}
        for proc in tree:
            known = self._procs.setdefault(proc.pid, proc)  # keep one handle: psutil caches per object
            try:
                with known.oneshot():
                    rss += known.memory_info().rss
                    t = known.cpu_times()
                    readings[proc.pid] = t.user + t.system
            except psutil.Error:
                continue
        with self._lock:
            self._peak = max(self._peak, rss)
            for pid, cpu in readings.items():
                self._cpu_start.setdefault(pid, 0.0)
                self._cpu_last[pid] = cpu

    def reset(self) -> None:
        """Open a new window: peak and CPU count from now."""
        self.sample()
        with self._lock:
            self._peak = 0
            self._cpu_start = dict(self._cpu_last)

    def peak_rss(self) -> int:
        self.sample()
        with self._lock:
            return self._peak

    def cpu_seconds(self) -> float:
        """CPU seconds the tree spent in this window (processes that ended early count until their last sample)."""
        self.sample()
        with self._lock:
            return sum(self._cpu_last[pid] - self._cpu_start.get(pid, 0.0) for pid in self._cpu_last)
