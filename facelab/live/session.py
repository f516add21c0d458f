"""The live pipeline and its figures (capture and output fps, latency, drops).

Two schedules run the same steps (prepare, model, blend + output; see swapper.py):
- `threads`: each step on its own thread, joined by one-slot queues, so each works on a different
  frame at once and the frame rate is set by the slowest step rather than by their sum;
- `sequential`: one thread does all three for a frame, then the next.
Which is faster depends on the machine: with cores to spare the threads win, but on a small CPU
they slow the model's own threads more than they gain. `auto` measures both on the first frames
and keeps the faster. With a live input the capture thread keeps only the newest frame, so a slow
pipeline drops frames instead of lagging behind.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass

from facelab.live.outputs import Output
from facelab.live.sources import Source
from facelab.live.swapper import Swapper, Work
from facelab.media.mark import Stamp

WINDOW_S = 2.0  # the fps and latency figures are over the last two seconds
SCHEDULES = ("auto", "threads", "sequential")
WARMUP, PROBE = 4, 16  # frames: the model's first calls are slow; then each schedule is timed on PROBE
THREADS_MARGIN = 1.05  # threads must be this much faster to be chosen (sequential has less latency)


@dataclass
class Stats:
    captured: int = 0  # frames the input delivered
    processed: int = 0  # frames swapped and written
    dropped: int = 0  # frames the pipeline was too slow for
    faces: int = 0
    capture_fps: float = 0.0
    output_fps: float = 0.0
    latency_ms: float = 0.0  # capture to output, recent mean
    model_ms: float = 0.0  # the model step per frame, recent mean
    seconds: float = 0.0
    schedule: str = ""
    probe_fps: dict | None = None  # auto: frames/s each schedule reached on the first frames
    steady_fps: float = 0.0  # frames/s once the schedule is chosen (after the warm-up and the probe)

    def line(self) -> str:
        return (f"capture {self.capture_fps:.1f} fps, output {self.output_fps:.1f} fps, latency "
                f"{self.latency_ms:.0f} ms, model {self.model_ms:.0f} ms, dropped "
                f"{self.dropped}")  # fmt: skip

    def as_dict(self) -> dict:
        return asdict(self)


_END = object()


class LiveSession:
    def __init__(self, source: Source, swapper: Swapper, outputs: list[Output], schedule: str = "auto",
                 model_delay_s: float = 0.0, stamp: Stamp | None = None):  # fmt: skip
        self.source, self.swapper, self.outputs = source, swapper, outputs
        self.stamp = stamp  # a visible label on every output frame (media/mark.py)
        self.schedule = schedule
        self.model_delay_s = model_delay_s  # a deliberately slow model, to test dropping
        self.stats = Stats()
        self.stop_event = threading.Event()
        self._recent: deque[tuple[float, float, float]] = deque()  # (output time, latency, model s)
        self._captures: deque[tuple[float, int]] = deque()
        self._lock = threading.Lock()
        self._start = 0.0
        self.applied: dict = {}  # the settings the newest output frame was made with
        self._ended = False  # the input has no more frames
        self.errors: list[BaseException] = []

    def stop(self) -> None:
        self.stop_event.set()

    # -- the steps ------------------------------------------------------------------------------
    def _model(self, work: Work) -> Work:
        t = time.perf_counter()
        work = self.swapper.infer(work)
        if self.model_delay_s:
            time.sleep(self.model_delay_s)
        work.model_s = time.perf_counter() - t
        return work

    def _output(self, work: Work) -> None:
        work = self.swapper.blend(work)
        image = self.stamp.draw(work.image) if self.stamp else work.image
        for out in self.outputs:
            out.write(image, work.frame.index)
        done = time.perf_counter()
        with self._lock:
            self.stats.processed += 1
            self.stats.faces += len(work.cut)
            self.applied = work.settings
            self._recent.append((done, done - work.frame.captured, work.model_s))
            while self._recent and done - self._recent[0][0] > WINDOW_S:
                self._recent.popleft()

    def _all(self, frame) -> None:
        self._output(self._model(self.swapper.prepare(frame)))

    # -- running a schedule for some frames -----------------------------------------------------
    def _put(self, q: queue.Queue, item) -> bool:
        while not self.stop_event.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _get(self, q: queue.Queue):
        while not self.stop_event.is_set():
            try:
                return q.get(timeout=0.1)
            except queue.Empty:
                continue
        return _END

    def _frames(self, limit: int | None):
        """Frames from the input, up to `limit`; marks the end of the input."""
        taken = 0
        while not self.stop_event.is_set() and (limit is None or taken < limit):
            frame = self.source.next()
            if frame is None:
                self._ended = True
                return
            taken += 1
            yield frame

    def _stage(self, inbox, step, outbox: queue.Queue | None) -> None:
        try:
            for item in inbox if not isinstance(inbox, queue.Queue) else iter(lambda: self._get(inbox), _END):
                out = step(item)
                if outbox is not None and not self._put(outbox, out):
                    break
        except BaseException as exc:  # the first error ends the session and is raised by run()
            self.errors.append(exc)
            self.stop_event.set()
        finally:
            if outbox is not None:
                self._put(outbox, _END)

    def _run(self, schedule: str, limit: int | None, on_stats=None, every_s: float = 1.0) -> float:
        """Process up to `limit` frames with `schedule`; returns their frames per second.

        The model always runs on the calling thread: PyTorch's CPU threads run it markedly slower
        (a third, measured) when it is called from a thread other than the one that started them."""
        start, before = time.perf_counter(), self.stats.processed
        frames = self._frames(limit)
        shown = start

        def tick() -> None:
            nonlocal shown
            if on_stats is not None and time.perf_counter() - shown >= every_s:
                shown = time.perf_counter()
                on_stats(self.snapshot())

        threads = []
        try:
            if schedule == "sequential":
                for frame in frames:
                    self._all(frame)
                    tick()
            else:
                prepared, predicted = queue.Queue(maxsize=1), queue.Queue(maxsize=1)
                steps = ((frames, self.swapper.prepare, prepared), (predicted, self._output, None))
                threads = [threading.Thread(target=self._stage, args=s, daemon=True) for s in steps]
                for t in threads:
                    t.start()
                try:
                    while (work := self._get(prepared)) is not _END:
                        if not self._put(predicted, self._model(work)):
                            break
                        tick()
                finally:
                    self._put(predicted, _END)
        except BaseException:
            self.stop_event.set()
            raise
        finally:
            for t in threads:
                t.join(timeout=10)
        took = time.perf_counter() - start
        return (self.stats.processed - before) / took if took > 0 else 0.0

    def run(self, on_stats=None, every_s: float = 1.0) -> Stats:
        """Run until the input ends, `stop()` or an error (raised here); `on_stats(Stats)` every second."""
        self._start = time.perf_counter()
        try:
            schedule = self.schedule
            if schedule == "auto":
                self._run("sequential", WARMUP)
                probe = {s: self._run(s, PROBE) for s in ("sequential", "threads")}
                faster = probe["threads"] > probe["sequential"] * THREADS_MARGIN
                schedule = "threads" if faster else "sequential"
                self.stats.probe_fps = {k: round(v, 2) for k, v in probe.items()}
            self.stats.schedule = schedule
            if not self._ended and not self.stop_event.is_set():
                self.stats.steady_fps = self._run(schedule, None, on_stats, every_s)
        finally:
            self.stop_event.set()
            self.source.stop()
        final = self.snapshot()
        if self.errors:
            raise self.errors[0]
        return final

    def snapshot(self) -> Stats:
        """The figures now (thread-safe)."""
        now = time.perf_counter()
        with self._lock:
            s = self.stats
            s.captured, s.dropped = self.source.read, self.source.dropped
            s.seconds = now - self._start if self._start else 0.0
            self._captures.append((now, s.captured))
            while len(self._captures) > 1 and now - self._captures[0][0] > WINDOW_S:
                self._captures.popleft()
            t0, c0 = self._captures[0] if len(self._captures) > 1 else (self._start, 0)
            s.capture_fps = (s.captured - c0) / (now - t0) if now > t0 else 0.0
            if len(self._recent) > 1:
                span = self._recent[-1][0] - self._recent[0][0]
                s.output_fps = (len(self._recent) - 1) / span if span > 0 else 0.0
                s.latency_ms = 1000 * sum(r[1] for r in self._recent) / len(self._recent)
                s.model_ms = 1000 * sum(r[2] for r in self._recent) / len(self._recent)
            return Stats(**asdict(s))
