"""Crash-safe file writes (temp file in the same folder, fsync, rename, fsync the folder), and the
JSON reader whose every failure on a damaged file is one exception type."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

_UMASK = os.umask(0)
os.umask(_UMASK)


def default_mode(path: Path) -> None:
    """Give a file made by mkstemp (0600) the permissions a plain open() would have."""
    os.chmod(path, 0o666 & ~_UMASK)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: Path | str, fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path` in one rename.

    The temporary name keeps the suffix so tools that pick a format by extension
    (ffmpeg, OpenCV) still work. On error the temporary file is removed.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        default_mode(tmp_path)
        if fsync:
            with open(tmp_path, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp_path, path)
        if fsync:
            fsync_dir(path.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()


def remove_stale_temps(path: Path | str, older_than_s: float = 120.0) -> int:
    """Remove the temporary files `atomic_path` left beside `path` when its process was killed (a
    live writer keeps touching its file, so only those untouched for `older_than_s` go)."""
    path = Path(path)
    removed = 0
    pattern = f".{glob.escape(path.stem)}.*.tmp{path.suffix}"
    for tmp in path.parent.glob(pattern) if path.parent.is_dir() else []:
        with contextlib.suppress(OSError):
            if time.time() - tmp.stat().st_mtime > older_than_s:
                tmp.unlink()
                removed += 1
    return removed


def remove_temps_in(folder: Path | str) -> int:
    """Remove every temporary file `atomic_path` left in `folder` (a killed writer's). Only for a
    folder its caller holds (facelab.locks), where no live writer can be at work."""
    removed = 0
    for tmp in Path(folder).glob(".*.tmp.*") if Path(folder).is_dir() else []:
        with contextlib.suppress(OSError):
            tmp.unlink()
            removed += 1
    return removed


def write_bytes_atomic(path: Path | str, data: bytes, fsync: bool = True) -> None:
    with atomic_path(path, fsync=fsync) as tmp:
        tmp.write_bytes(data)


def write_json_atomic(path: Path | str, obj: object) -> None:
    write_bytes_atomic(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def parse_json(data: bytes | str):
    """json.loads, where every way damaged data fails is a ValueError: bad UTF-8, bad JSON, and
    nesting too deep for the parser (which json raises as RecursionError)."""
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def read_json(path: Path | str):
    """The JSON in a file: OSError when it cannot be read, ValueError when it is damaged."""
    return parse_json(Path(path).read_bytes())


def is_file_name(name) -> bool:
    """Whether `name`, read from a file of ours, is one plain file name (no folder, no NUL, not too
    long for the filesystem), so that a damaged record cannot point anywhere else."""
    return (isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and "\0" not in name
            and len(name.encode(errors="surrogatepass")) <= 240)  # fmt: skip


def ensure_writable_dir(path: Path) -> None:
    """Create `path` if needed and prove we can write into it, or raise OSError."""
    path.mkdir(parents=True, exist_ok=True)
    fd, probe = tempfile.mkstemp(prefix=".facelab-write-test-", dir=path)
    os.close(fd)
    os.unlink(probe)
