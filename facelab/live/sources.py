"""Where live frames come from: a camera (index or /dev/videoN), a stream URL, or a video file.

Cameras and streams are read as fast as they deliver; the reader keeps only the newest frame, so a
slow pipeline skips frames (and counts them) instead of falling behind. A file is read at its own
frame rate with `realtime`, and otherwise every frame is delivered, as fast as it is taken.
"""

from __future__ import annotations

import os
import re
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from facelab.errors import FacelabError

# FFmpeg's own messages (read when OpenCV first opens a stream) would repeat our one-line errors.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp", "srt")
OPEN_TIMEOUT_S = 10.0
RETRY_S = 2.0  # wait between attempts to reopen a dropped camera or stream
FILE_QUEUE = 8  # frames read ahead from a file when every frame is processed


@dataclass
class Frame:
    index: int  # position in the input (0-based): gaps are dropped frames
    image: np.ndarray
    captured: float  # time.perf_counter() when it was read


def describe(spec: str) -> tuple[str, str | int]:
    """(kind, what to open): camera (an index or a device path), stream (a URL) or file."""
    if re.fullmatch(r"\d+", spec):
        return "camera", int(spec)
    if spec.startswith("/dev/video"):
        return "camera", spec
    scheme = spec.split("://", 1)[0].lower() if "://" in spec else ""
    if scheme in STREAM_SCHEMES:
        return "stream", spec
    if scheme:
        raise FacelabError(f"--input {spec}: {scheme}:// is not a stream facelab reads "
                           f"(use {', '.join(STREAM_SCHEMES)})")  # fmt: skip
    return "file", spec


def _cameras() -> str:
    found = sorted(str(p) for p in Path("/dev").glob("video*")) if Path("/dev").is_dir() else []
    return ", ".join(found) if found else "none"


class Source:
    """An opened input; `frames()` yields `Frame`s on a reader thread's behalf until the input ends
    or `stop()` is called."""

    def __init__(self, spec: str, realtime: bool = False, open_timeout_s: float = OPEN_TIMEOUT_S,
                 loop: bool = False, say=print):  # fmt: skip
        self.spec, self.say, self.loop = spec, say, loop
        self.kind, self.target = describe(spec)
        self.realtime = realtime or self.kind != "file"  # cameras and streams are always live
        self.timeout_ms = int(open_timeout_s * 1000)
        self.cap = self._open()
        fps = self.cap.get(cv2.CAP_PROP_FPS)
        self.fps = fps if 1 <= fps <= 240 else 30.0
        count = int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT)) if self.kind == "file" else 0
        self.frame_count = count if count > 0 else None
        self.path = Path(spec) if self.kind == "file" else None
        self.read = self.dropped = 0
        self._stop = threading.Event()
        self._lock = threading.Condition()
        self._latest: Frame | None = None
        self._queue: deque[Frame] = deque()
        self._ended = False
        self._error: Exception | None = None
        self._thread = threading.Thread(target=self._reader, name="live-capture", daemon=True)
        self._thread.start()

    def _open(self) -> cv2.VideoCapture:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # our errors say it in one line
        if self.kind == "file":
            if not Path(self.spec).is_file():
                raise FacelabError(f"--input {self.spec}: no such file (give a video file, a camera index "
                                   "such as 0, or a stream URL)")  # fmt: skip
            cap = cv2.VideoCapture(self.spec, cv2.CAP_FFMPEG)
            if not cap.isOpened():
                raise FacelabError(f"{self.spec} is not a video facelab can read: convert it to .mp4")
            return cap
        if self.kind == "stream":
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, self.timeout_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC,
                      self.timeout_ms]  # fmt: skip
            start = time.perf_counter()
            cap = cv2.VideoCapture(self.spec, cv2.CAP_FFMPEG, params)
            if not cap.isOpened():
                took = time.perf_counter() - start
                why = "timed out" if took >= self.timeout_ms / 1000 * 0.9 else "refused or unreadable"
                raise FacelabError(f"--input {self.spec}: the stream could not be opened ({why} after "
                                   f"{took:.1f} s): check the address and that it is streaming")  # fmt: skip
            return cap
        if isinstance(self.target, str) and not Path(self.target).exists():
            raise FacelabError(f"--input {self.target}: no such camera (cameras here: {_cameras()})")
        backend = cv2.CAP_V4L2 if sys.platform.startswith("linux") else cv2.CAP_ANY
        cap = cv2.VideoCapture(self.target, backend)
        if not cap.isOpened():
            raise FacelabError(f"--input {self.spec}: camera {self.target} cannot be opened (cameras here: "
                               f"{_cameras()}; is another program using it?)")  # fmt: skip
        return cap

    # -- the reader thread ----------------------------------------------------------------------
    def _reader(self) -> None:
        try:
            start, index = time.perf_counter(), 0
            while not self._stop.is_set():
                if self.kind == "file" and self.realtime:  # play the file at its own rate
                    wait = start + index / self.fps - time.perf_counter()
                    if wait > 0:
                        time.sleep(wait)
                ok, image = self.cap.read()
                if not ok and self.kind == "file" and self.loop and index:
                    self.cap.set(cv2.CAP_PROP_POS_FRAMES, 0)  # from the start again
                    ok, image = self.cap.read()
                if not ok:
                    if self.kind == "file" or not self._reopen():
                        break
                    continue
                frame = Frame(index, image, time.perf_counter())
                index += 1
                self._deliver(frame)
        except Exception as exc:  # handed to the consumer, which raises it
            self._error = exc
        finally:
            with self._lock:
                self._ended = True
                self._lock.notify_all()

    def _deliver(self, frame: Frame) -> None:
        with self._lock:
            self.read += 1
            if self.realtime:
                if self._latest is not None:
                    self.dropped += 1  # the pipeline never took it
                self._latest = frame
            else:
                while len(self._queue) >= FILE_QUEUE and not self._stop.is_set():
                    self._lock.wait(0.1)
                self._queue.append(frame)
            self._lock.notify_all()

    def _reopen(self) -> bool:
        """A camera or stream stopped delivering: say so and retry until it comes back or we stop."""
        self.cap.release()
        self.say(f"{self.spec} stopped sending frames: retrying every {RETRY_S:g} s (Ctrl-C stops)")
        while not self._stop.wait(RETRY_S):
            try:
                self.cap = self._open()
            except FacelabError:
                continue
            self.say(f"{self.spec} is back")
            return True
        return False

    # -- the consumer -----------------------------------------------------------------------------
    def next(self) -> Frame | None:
        """The next frame to process (the newest one when live), or None at the end."""
        with self._lock:
            while True:
                if self.realtime and self._latest is not None:
                    frame, self._latest = self._latest, None
                    return frame
                if not self.realtime and self._queue:
                    frame = self._queue.popleft()
                    self._lock.notify_all()
                    return frame
                if self._ended:
                    if self._error is not None:
                        raise self._error
                    return None
                self._lock.wait(0.5)

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            self._lock.notify_all()
        self._thread.join(timeout=5)
        self.cap.release()
