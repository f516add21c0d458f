"""One step at a time on one thing: a faceset, the merged frames.

Two steps that edit the same folder at once lose work (a sort renaming faces that an extraction is
still writing; two merges writing the same frames; make-video encoding frames a merge is still
changing). Each such step holds the folder's lock for as long as it runs; a second one is refused
at once with a message naming the process that holds it. The lock is an flock, so the kernel drops
it when its holder dies: a killed step never leaves a folder stuck.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

from facelab.errors import FacelabError

LOCK_FILE = ".facelab.lock"
_held: set[int] = set()  # descriptors of the locks this process holds


class Busy(FacelabError):
    """Another process is using the folder."""


@contextlib.contextmanager
def hold(folder: Path, what: str) -> Iterator[None]:
    """Hold `folder` for the step `what` (e.g. "sort src"), or raise Busy naming the holder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 300, 0).decode(errors="replace").strip() or "another process"
            raise Busy(f"{folder} is in use by {holder}: wait for it to finish (or stop it), "
                       "then run this again") from None  # fmt: skip
        os.ftruncate(fd, 0)
        since = time.strftime("%H:%M:%S")
        os.pwrite(fd, f"`facelab {what}` (process {os.getpid()}, since {since})".encode(), 0)
        _held.add(fd)
        try:
            yield
        finally:
            _held.discard(fd)
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
    finally:
        os.close(fd)


def holder(folder: Path) -> str | None:
    """Who holds `folder` now ("`facelab sort src` (process 12, since 10:02:03)"), or None."""
    try:
        fd = os.open(Path(folder) / LOCK_FILE, os.O_RDWR)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    except BlockingIOError:
        return os.pread(fd, 300, 0).decode(errors="replace").strip() or "another process"
    finally:
        os.close(fd)


def forget_in_child() -> None:
    """In a forked worker: close the inherited lock descriptors, so that workers left running by a
    killed parent do not keep its folders locked (the parent's own descriptors still hold them)."""
    for fd in list(_held):
        with contextlib.suppress(OSError):
            os.close(fd)
    _held.clear()
