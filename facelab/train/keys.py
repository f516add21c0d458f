"""Single-key commands (s, b, p, Enter) without blocking the training loop: from the terminal, or
from a `command` file in the model folder (how `facelab ui` presses them for a trainer it started)."""

from __future__ import annotations

import contextlib
import os
import queue
import select
import sys
import threading
from pathlib import Path

from facelab.fsutil import write_bytes_atomic
from facelab.models.folder import COMMAND

try:
    import termios
    import tty
except ImportError:  # pragma: no cover - not on POSIX
    termios = tty = None

_NAMES = {"\r": "enter", "\n": "enter"}


def usable() -> bool:
    return termios is not None and sys.stdin.isatty() and sys.stdout.isatty()


class KeyReader:
    """Reads keys in a thread while the terminal is in cbreak mode; `poll()` returns one or None."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.keys: queue.Queue[str] = queue.Queue()
        self._stop = threading.Event()
        self._saved = None

    def __enter__(self) -> KeyReader:
        if self.enabled and usable():
            fd = sys.stdin.fileno()
            self._saved = termios.tcgetattr(fd)
            tty.setcbreak(fd)
            threading.Thread(target=self._read, args=(fd,), daemon=True).start()
        return self

    def _read(self, fd: int) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                ch = os.read(fd, 1).decode(errors="ignore").lower()
                if ch:
                    self.keys.put(_NAMES.get(ch, ch))

    def poll(self) -> str | None:
        with contextlib.suppress(queue.Empty):
            return self.keys.get_nowait()
        return None

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._saved is not None:
            termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, self._saved)


COMMANDS = ("s", "b", "p", "enter")


def send_command(folder: Path, key: str) -> None:
    """Ask the trainer of `folder` to act on `key` at its next iteration."""
    if key not in COMMANDS:
        raise ValueError(f"unknown trainer command {key!r} (one of {', '.join(COMMANDS)})")
    write_bytes_atomic(folder / COMMAND, key.encode(), fsync=False)


def take_command(folder: Path) -> str | None:
    path = folder / COMMAND
    try:
        key = path.read_bytes()[:16].decode(errors="replace").strip()
        path.unlink()
    except OSError:
        return None
    return key if key in COMMANDS else None
