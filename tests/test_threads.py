"""The training thread count under a competing load (train/threads.py), driven by injected step
times and loads, and the load measurement itself against a real busy process."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from facelab.train import threads
from facelab.train.threads import BusyElsewhere, ThreadTuner

QUIET = {2: 100.0, 1: 175.0}  # ms per step by thread count, as measured for Quick96 on two cores
LOADED = {2: 216.0, 1: 175.0}  # beside a one-core busy loop


def drive(steps: int, times, busy, most: int = 2):
    """Run a tuner for `steps` iterations; times(step, count) and busy(step) describe the machine.
    Returns the tuner, the thread count at every step and the lines it printed."""
    counts, lines = [], []
    tuner = ThreadTuner(most, set_threads=lambda n: None, busy_elsewhere=lambda: busy(len(counts)))
    for step in range(steps):
        counts.append(tuner.count)
        if line := tuner.after_step(times(step, tuner.count)):
            lines.append(line)
    return tuner, counts, lines


def test_a_quiet_machine_keeps_every_thread():
    set_to = []
    tuner = ThreadTuner(2, set_threads=set_to.append, busy_elsewhere=lambda: 0.05)
    for step in range(2000):
        tuner.after_step(QUIET[2] * (1.2 if step % 7 == 0 else 1.0))  # an occasional slower step
    assert set_to == [] and tuner.count == 2


def test_load_moves_to_fewer_threads_and_back_when_it_goes():
    def times(step, count):
        return (LOADED if 100 <= step < 400 else QUIET)[count]

    tuner, counts, lines = drive(600, times, busy=lambda step: 1.0 if 100 <= step < 400 else 0.0)
    assert counts[:100] == [2] * 100
    went_down = counts.index(1, 100)
    assert went_down <= 100 + 2 * threads.WINDOW  # within the window that saw the load
    assert set(counts[went_down + threads.WINDOW + threads.SETTLE : 400]) == {1}  # kept: it measured faster
    assert set(counts[400 + 3 * threads.WINDOW :]) == {2}  # back to every core once the load went
    assert lines[0] == "threads: 1 of 2 (1.23x faster than 2, measured, 1.0 cores busy elsewhere before)"
    assert lines[1].startswith("threads: 2 of 2")


def mostly(counts: list[int]) -> int:
    """The count of most of the last 100 steps (a periodic trial may be running at the end)."""
    tail = counts[-100:]
    return max(set(tail), key=tail.count)


def test_a_load_from_the_start_is_found_by_measuring_it():
    _, counts, lines = drive(200, lambda step, count: LOADED[count], busy=lambda step: 1.0)
    assert counts[-1] == 1 and len(lines) == 1
    # ... and, where the busy time cannot be read, by the slowdown against the quiet time; then a
    # trial of one more thread now and then, which is undone while the load stays.
    later = lambda step, count: (LOADED if step >= 100 else QUIET)[count]  # noqa: E731
    _, counts, lines = drive(600, later, lambda step: None)
    assert mostly(counts) == 1 and len(lines) == 1 and 2 in counts[200:]


def test_a_trial_that_does_not_pay_is_undone_and_waits_longer_each_time():
    slower_on_fewer = {8: 150.0, 7: 160.0}  # a load that fewer threads do not beat
    tuner, counts, lines = drive(3000, lambda step, count: slower_on_fewer[count], lambda step: 2.0, most=8)
    assert lines == [] and counts[-1] == 8
    trials = sum(1 for a, b in zip(counts, counts[1:], strict=False) if a == 8 and b == 7)
    assert 3 <= trials <= 7  # backoff 48, 96, 192, ...: a handful in 3000 iterations, not one per window


def test_it_climbs_down_more_than_one_step_while_that_pays():
    times = {4: 300.0, 3: 200.0, 2: 150.0, 1: 170.0}
    _, counts, lines = drive(200, lambda step, count: times[count], lambda step: 2.5, most=4)
    assert mostly(counts) == 2
    assert [line.split(" (")[0] for line in lines] == ["threads: 3 of 4", "threads: 2 of 4"]


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="reads Linux's /proc/stat")
def test_busy_elsewhere_measures_another_process():
    measure = BusyElsewhere()
    measure()
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        measure()  # from here on the busy loop runs all the time
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:  # this process busy too: its own time must not count
            pass
        during = measure()
    finally:
        hog.kill()
        hog.wait()
    assert during is not None and during >= 0.6, during
    assert measure() is None  # called again at once: too short to say
