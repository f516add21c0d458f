"""Training's CPU thread count while other processes compete for the cores.

Each OpenMP parallel region in a step ends at a barrier, so it lasts as long as its slowest thread.
When another process takes part of one core, the thread on that core makes every region wait, and
the step costs about twice its quiet time on two cores (measured: 2.2x with a one-core busy loop
beside training), while one thread fewer keeps a core to itself (1.75x). Which count is faster
depends on the model, the CPU and the load, so it is measured, not assumed:

- the tuner watches the step times in windows of a few iterations;
- when the steps slow down against the quiet time of this count, or other processes are using the
  cores training runs on (Linux: /proc/stat for this process's CPUs, minus its own time), it tries
  one thread fewer for a window and keeps the count only if it measured faster;
- on fewer threads, it tries one more when the others go quiet (and every so often where the busy
  time cannot be read), so the speed comes back when the load goes;
- a trial that does not pay waits twice as long before the next.

On a quiet machine nothing changes. A changed count changes the float summation order, so a run
whose count changed is not bit-identical to one whose count did not; `--threads N` fixes the count.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

WINDOW = 6  # iterations per measurement
SETTLE = 2  # iterations skipped after a change (oneDNN builds its kernels for the new count)
SLOWER = 1.3  # a window this much slower than the count's quiet time counts as load
BUSY = 0.5  # cores used by other processes that count as load
IDLE = 0.25  # ... and as quiet again
GAIN = 0.05  # a trial's count is kept when it measured at least this much faster
BACKOFF = 48  # iterations before trying again after a trial that did not pay (doubles, up to 32x)


class BusyElsewhere:
    """Cores' worth of CPU time used by other processes on this process's CPUs since the last call:
    /proc/stat's busy time of those CPUs minus this process's own. None where /proc is missing."""

    def __init__(self):
        self.cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        self.tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.last = self._sample()

    def _sample(self) -> tuple[float, float, float] | None:
        try:
            busy = 0
            wanted = {f"cpu{c}" for c in self.cpus}
            for line in Path("/proc/stat").read_text().splitlines():
                name, *fields = line.split()
                if name in wanted:  # user nice system idle iowait irq softirq steal ...
                    values = [int(v) for v in fields[:8]]
                    busy += sum(values) - values[3] - values[4]
            own = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
            return time.monotonic(), busy / self.tick, (int(own[11]) + int(own[12])) / self.tick
        except (OSError, ValueError, IndexError):
            return None

    def __call__(self) -> float | None:
        now = self._sample()
        if now is None or self.last is None or not self.cpus:
            return None
        (t0, busy0, own0), (t1, busy1, own1), self.last = self.last, now, now
        if t1 - t0 < 0.5:  # too short for clock ticks to say anything
            return None
        return max(0.0, (busy1 - busy0) - (own1 - own0)) / (t1 - t0)


class ThreadTuner:
    """Feed it every step's time (ms); it sets the thread count and says when it changed it."""

    def __init__(self, most: int, set_threads: Callable[[int], None] = torch.set_num_threads,
                 busy_elsewhere: Callable[[], float | None] | None = None):  # fmt: skip
        self.most = self.count = most
        self.set_threads = set_threads
        self.busy_elsewhere = busy_elsewhere or BusyElsewhere()
        self.quiet_ms: dict[int, float] = {}  # each count's window median when it was last chosen
        self.window: list[float] = []
        self.others: float | None = None  # the last window's busy time elsewhere
        self.skip = 0
        self.steps = 0
        # (count before the trial, its window median, the busy time elsewhere in that window)
        self.trial: tuple[int, float, float | None] | None = None
        self.wait = {"down": BACKOFF, "up": BACKOFF}
        self.next_try = {"down": 0, "up": BACKOFF}

    def after_step(self, ms: float) -> str | None:
        self.steps += 1
        if self.skip:
            self.skip -= 1
            return None
        self.window.append(ms)
        if len(self.window) < WINDOW:
            return None
        median, self.window = statistics.median(self.window), []
        others, before = self.busy_elsewhere(), self.others
        self.others = others
        if self.trial is not None:
            return self._judge(median)
        # Busy time counts when two windows in a row saw it, so the window compared against a trial
        # ran under the load all the time; a slowdown counts at once.
        busy = others is not None and before is not None and min(others, before) >= BUSY
        idle = others is not None and before is not None and max(others, before) < IDLE
        quiet = self.quiet_ms.setdefault(self.count, median)
        if (busy or median > quiet * SLOWER) and self.count > 1 and self.steps >= self.next_try["down"]:
            self._start(self.count - 1, median, others)
        elif self.count < self.most and (
            idle or ((others is None or others < BUSY) and self.steps >= self.next_try["up"])
        ):
            self._start(self.count + 1, median, others)
        return None

    def _start(self, count: int, median: float, others: float | None) -> None:
        self.trial = (self.count, median, others)
        self._set(count)

    def _judge(self, median: float) -> str | None:
        before, before_ms, others = self.trial
        self.trial = None
        way = "down" if self.count < before else "up"
        if median < before_ms * (1 - GAIN):
            self.quiet_ms[self.count] = median
            self.wait[way] = BACKOFF
            self.next_try = {"down": self.steps, "up": self.steps + BACKOFF}  # go on the same way
            load = f", {others:.1f} cores busy elsewhere before" if others is not None else ""
            return (f"threads: {self.count} of {self.most} ({before_ms / median:.2f}x faster than "
                    f"{before}, measured{load})")  # fmt: skip
        self._set(before)
        self.quiet_ms[before] = before_ms
        self.next_try[way] = self.steps + self.wait[way]
        self.wait[way] = min(self.wait[way] * 2, BACKOFF * 32)
        return None

    def _set(self, count: int) -> None:
        self.count, self.skip = count, SETTLE
        self.set_threads(count)
