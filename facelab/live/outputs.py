"""Where swapped live frames go: a video file (with the input's sound), a window, a v4l2loopback
camera (so video-call programs see the swap as a webcam), or the browser page of `facelab ui`."""

from __future__ import annotations

import contextlib
import gc
import os
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np

from facelab.errors import FacelabError
from facelab.fsutil import atomic_path, remove_stale_temps
from facelab.media.ffmpeg import ffmpeg_exe, last_error_line
from facelab.media.mark import metadata_args

JPEG_QUALITY = 85


class Output:
    """Where the session writes each swapped frame; `index` is its place in the input (a gap means
    frames were dropped)."""

    def write(self, image: np.ndarray, index: int) -> None: ...

    def close(self) -> None: ...


class _FFmpegPipe:
    """ffmpeg reading raw BGR frames on stdin."""

    def __init__(self, size: tuple[int, int], fps: float, tail: list[str], what: str):
        w, h = size
        cmd = [ffmpeg_exe(), "-hide_banner", "-nostats", "-v", "error", "-f", "rawvideo", "-pix_fmt", "bgr24",
               "-s", f"{w}x{h}", "-framerate", f"{fps:.6g}", "-i", "pipe:0", *tail]  # fmt: skip
        self.what = what
        pipe = subprocess.PIPE
        self.proc = subprocess.Popen(cmd, stdin=pipe, stdout=subprocess.DEVNULL, stderr=pipe)
        self._stderr = b""
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        self._stderr = self.proc.stderr.read()

    def write(self, image: np.ndarray) -> None:
        try:
            self.proc.stdin.write(np.ascontiguousarray(image).tobytes())
        except BrokenPipeError:
            self.proc.wait()
            self._reader.join()
            raise FacelabError(f"{self.what}: ffmpeg stopped ({self.error()})") from None

    def error(self) -> str:
        return last_error_line(self._stderr.decode(errors="replace"))

    def close(self) -> int:
        with contextlib.suppress(BrokenPipeError):
            self.proc.stdin.close()
        code = self.proc.wait()
        self._reader.join()
        return code


class FileOutput(Output):
    """An H.264 .mp4 at the input's frame rate, with the input file's audio; written to a temporary
    file and moved into place when complete (also when stopped with Ctrl-C: what was recorded is
    kept). Dropped input frames repeat the previous frame, so the picture stays in time with the sound."""

    def __init__(self, path: Path, fps: float, audio_from: Path | None = None, overwrite: bool = False,
                 mark: dict | None = None):  # fmt: skip
        self.path, self.fps, self.audio_from, self.mark = Path(path), fps, audio_from, mark
        if self.path.exists() and not overwrite:
            raise FacelabError(f"{self.path} already exists: pass --overwrite to replace it")
        if self.path.suffix.lower() not in (".mp4", ".mov", ".mkv"):
            raise FacelabError(f"--output {self.path}: write .mp4, .mov or .mkv")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(self.path)
        self._files = contextlib.ExitStack()  # the temporary file, renamed into place on close
        self._pipe: _FFmpegPipe | None = None
        self._last: np.ndarray | None = None
        self.written = 0

    def _start(self, image: np.ndarray) -> None:
        tmp = self._files.enter_context(atomic_path(self.path))
        tail = []
        if self.audio_from is not None:
            tail += ["-i", str(self.audio_from), "-map", "0:v:0", "-map", "1:a:0?", "-c:a", "aac",
                     "-b:a", "160k"]  # fmt: skip
        flags = "+faststart" + ("+use_metadata_tags" if self.mark else "")  # MP4 keeps the `facelab` key
        tail += ["-c:v", "libx264", "-preset", "ultrafast", "-crf", "18", "-pix_fmt", "yuv420p",
                 *metadata_args(self.mark, self.path.suffix), "-movflags", flags, "-y", str(tmp)]  # fmt: skip
        h, w = image.shape[:2]
        self._pipe = _FFmpegPipe((w, h), self.fps, tail, f"writing {self.path}")

    def write(self, image: np.ndarray, index: int) -> None:
        if self._pipe is None:
            self._start(image)
        while self._last is not None and self.written < index:  # frames dropped before this one
            self._pipe.write(self._last)
            self.written += 1
        self._pipe.write(image)
        self._last, self.written = image, self.written + 1

    def close(self) -> None:
        if self._pipe is None:
            return
        if self._pipe.close() != 0:
            error = FacelabError(f"writing {self.path} failed: {self._pipe.error()}")
            self._files.__exit__(FacelabError, error, None)  # the temporary file goes
            raise error
        self._files.close()


def has_display() -> bool:
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


class WindowOutput(Output):
    """A window on this machine's display: Tk (which ships with Python) on a thread of its own, showing
    the newest frame; q, Esc or closing the window stops the session as Ctrl-C does."""

    def __init__(self, title: str = "facelab live"):
        if not has_display():
            raise FacelabError("--output window needs a display, and there is none ($DISPLAY is not set): "
                               "use --output browser, or a file such as --output out.mp4")  # fmt: skip
        try:
            import tkinter
        except ImportError:
            raise FacelabError("--output window needs Python's tkinter (apt install python3-tk): or use "
                               "--output browser") from None  # fmt: skip
        self._tk, self.title = tkinter, title
        self.closed = self._stop = False
        self._latest: np.ndarray | None = None
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._error: FacelabError | None = None
        self._thread = threading.Thread(target=self._window, name="live-window", daemon=True)
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise self._error

    def _window(self) -> None:
        self._show()
        gc.collect()  # Tk's objects must go on the thread that made them, not at the interpreter's exit

    def _show(self) -> None:
        tk = self._tk
        try:
            root = tk.Tk()
        except tk.TclError as exc:
            self._error = FacelabError(f"--output window: cannot open a window ({exc}): use --output browser")
            self._ready.set()
            return
        root.title(self.title)
        label = tk.Label(root)
        label.pack()
        root.bind("<Key>", lambda e: setattr(self, "closed", self.closed or e.keysym in ("q", "Escape")))
        root.protocol("WM_DELETE_WINDOW", lambda: setattr(self, "closed", True))
        self._ready.set()

        def show() -> None:
            with self._lock:
                image, self._latest = self._latest, None
            if image is not None:
                h, w = image.shape[:2]
                ppm = b"P6 %d %d 255 " % (w, h) + cv2.cvtColor(image, cv2.COLOR_BGR2RGB).tobytes()
                label.photo = tk.PhotoImage(data=ppm, format="PPM")  # kept, or Tk drops the picture
                label.configure(image=label.photo)
            if self._stop:
                root.destroy()
                return
            root.after(10, show)

        root.after(10, show)
        root.mainloop()
        label.photo = None

    def write(self, image: np.ndarray, index: int) -> None:
        if self.closed:
            raise KeyboardInterrupt
        with self._lock:
            self._latest = image

    def close(self) -> None:
        self._stop = True
        self._thread.join(timeout=5)


def loopback_devices() -> list[str]:
    root = Path("/sys/devices/virtual/video4linux")
    return sorted(f"/dev/{p.name}" for p in root.iterdir()) if root.is_dir() else []


class V4L2Output(Output):
    """A v4l2loopback device: frames go to it through ffmpeg as yuv420p at the input's rate."""

    def __init__(self, device: str, fps: float):
        loopbacks = loopback_devices()
        hint = ("load v4l2loopback first (sudo modprobe v4l2loopback devices=1 exclusive_caps=1), then use "
                "the device it makes")  # fmt: skip
        if not Path(device).exists():
            found = f"v4l2loopback devices here: {', '.join(loopbacks)}" if loopbacks else "there are none"
            raise FacelabError(f"--output v4l2:{device}: no such device ({found}): {hint}")
        if device not in loopbacks:
            raise FacelabError(f"--output v4l2:{device} is not a v4l2loopback device (a camera?): {hint}")
        self.device, self.fps, self._pipe = device, fps, None

    def write(self, image: np.ndarray, index: int) -> None:
        if self._pipe is None:
            h, w = image.shape[:2]
            self._pipe = _FFmpegPipe((w, h), self.fps, ["-f", "v4l2", "-pix_fmt", "yuv420p", self.device],
                                     f"writing {self.device}")  # fmt: skip
        self._pipe.write(image)

    def close(self) -> None:
        if self._pipe is not None:
            self._pipe.close()


class BrowserOutput(Output):
    """The newest frame as JPEG for the live page of `facelab ui` (an MJPEG stream)."""

    def __init__(self):
        self.jpeg: bytes | None = None
        self.seq = 0
        self._cond = threading.Condition()

    def write(self, image: np.ndarray, index: int) -> None:
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if ok:
            with self._cond:
                self.jpeg, self.seq = data.tobytes(), self.seq + 1
                self._cond.notify_all()

    def wait(self, seq: int, timeout: float = 1.0) -> tuple[int, bytes | None]:
        """The newest frame after `seq` (or the same one after `timeout`)."""
        with self._cond:
            self._cond.wait_for(lambda: self.seq > seq, timeout)
            return self.seq, self.jpeg
