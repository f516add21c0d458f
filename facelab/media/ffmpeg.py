"""The ffmpeg binary bundled in imageio-ffmpeg, and running it with readable errors."""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import subprocess
import tempfile
from collections.abc import Callable, Sequence

from facelab.errors import FacelabError


@functools.cache
def ffmpeg_exe() -> str:
    import imageio_ffmpeg

    try:
        return imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError as exc:  # pragma: no cover - broken install
        raise FacelabError(f"ffmpeg not found ({exc}): reinstall with `make env`") from exc


@functools.cache
def ffmpeg_version() -> str:
    out = subprocess.run([ffmpeg_exe(), "-version"], capture_output=True, text=True).stdout
    first = out.splitlines()[0] if out else "unknown"
    return first.split(" Copyright")[0].removeprefix("ffmpeg version ").strip()


def last_error_line(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    return lines[-1] if lines else "no message"


def run_ffmpeg(
    args: Sequence[str],
    what: str,
    on_progress: Callable[[int], None] | None = None,
    stdin_feed: Callable[[object], None] | None = None,
) -> str:
    """Run ffmpeg with `args`; return its stderr (warnings), raise FacelabError on failure.

    `on_progress(frames_done)` is called from ffmpeg's `-progress` output. `stdin_feed(pipe)`
    writes the input when the command reads from `pipe:0`.
    """
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostats", "-v", "error"]
    if stdin_feed is None:
        cmd.append("-nostdin")
    if on_progress is not None:
        cmd += ["-progress", "pipe:1"]
    cmd += list(args)
    with tempfile.TemporaryFile(mode="w+") as err:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE if stdin_feed else subprocess.DEVNULL,
            stdout=subprocess.PIPE if on_progress else subprocess.DEVNULL,
            stderr=err,
            text=False,
        )
        try:
            if stdin_feed is not None:
                try:
                    stdin_feed(proc.stdin)
                except BrokenPipeError:
                    pass  # ffmpeg stopped reading; its stderr says why
                finally:
                    with contextlib.suppress(BrokenPipeError):
                        proc.stdin.close()
            if on_progress is not None:
                for raw in proc.stdout:
                    line = raw.decode(errors="replace").strip()
                    if line.startswith("frame="):
                        with contextlib.suppress(ValueError):
                            on_progress(int(line.split("=", 1)[1]))
            code = proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        err.seek(0)
        stderr = err.read()
    if code != 0:
        for number, text in _DISK_ERRORS.items():  # the disk, not the video: the CLI's one line for it
            if text in stderr:
                raise OSError(number, os.strerror(number), str(args[-1]))
        raise FacelabError(f"{what} failed: ffmpeg says: {last_error_line(stderr)}")
    return stderr


# How ffmpeg words the file-system errors a user can fix (facelab.cli says what to do about each).
_DISK_ERRORS = {errno.ENOSPC: "No space left on device", errno.EROFS: "Read-only file system",
                errno.EDQUOT: "Disk quota exceeded", errno.EFBIG: "File too large"}  # fmt: skip
