"""Steps 1 and 2: a video to numbered frames (00001.jpg ...)."""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from facelab import progress
from facelab.errors import FacelabError, UsageError
from facelab.fsutil import ensure_writable_dir, fsync_dir, write_json_atomic
from facelab.media.ffmpeg import run_ffmpeg
from facelab.media.probe import VideoInfo, probe_video
from facelab.options import Option
from facelab.workspace import numbered_images

FRAME_FORMATS = ("jpg", "png")
# The settings of steps 1-2, for the flags and the prompts.
OPTIONS = [
    Option("fps", float, 0.0, "src only: frames per second to keep, 0 = every frame", range=(0.0, 240.0)),
    Option("image_format", str, "jpg", "frame image type", choices=tuple(FRAME_FORMATS), flags=("--format",)),
]  # fmt: skip
BY_NAME = {o.name: o for o in OPTIONS}
# dst frames are PNG unless asked otherwise, as DeepFaceLab's are: every pixel the merge leaves alone
# reaches the result as the dst video had it (JPEG frames cost 1.0-1.4 dB of PSNR outside the face
# on the shared clips, at a tenth of the disk). src frames are only cut into faces: JPEG.
DEFAULT_FORMAT = {"src": "jpg", "dst": "png"}
JPEG_QSCALE = 2  # ffmpeg's mjpeg scale, 2 = very high quality (about JPEG 95)


@dataclass
class FramesResult:
    count: int
    seconds: float
    replaced: int
    info: VideoInfo


def extract_frames(
    video: Path,
    out_dir: Path,
    fmt: str = "jpg",
    fps: float | None = None,
    overwrite: bool = False,
    info_path: Path | None = None,
) -> FramesResult:
    """Decode `video` into `out_dir/00001.<fmt>` ..., every frame or `fps` per second.

    Frames are first written to a hidden folder inside `out_dir` and moved into place only
    when the whole video decoded, so a failure or a kill never leaves a partial set mixed
    with the user's files. Existing frames are replaced only with `overwrite`.
    """
    if fmt not in FRAME_FORMATS:
        raise UsageError(f"unknown frame format {fmt!r}: use one of {', '.join(FRAME_FORMATS)}")
    if fps is not None and not (fps > 0 and math.isfinite(fps)):
        raise UsageError(f"--fps must be a positive number, not {fps:g}")
    info = probe_video(video)
    existing = numbered_images(out_dir)
    if existing and not overwrite:
        raise FacelabError(
            f"{out_dir} already holds {len(existing)} frames: pass --overwrite to replace them "
            "(other files and subfolders such as aligned/ are kept)"
        )
    if out_dir.exists() and not out_dir.is_dir():
        raise FacelabError(f"{out_dir} is a file, but the frames go into a folder of that name: move it away")
    try:
        ensure_writable_dir(out_dir)
    except OSError as exc:
        raise FacelabError(
            f"cannot write to {out_dir}: {exc.strerror}; choose a writable --workspace"
        ) from exc

    expected = info.frame_count if fps is None else _expected_at_fps(info, fps)
    start = time.perf_counter()
    tmp = out_dir / f".extract-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        args = ["-i", str(video), "-map", "0:v:0"]
        args += ["-vf", f"fps={fps}"] if fps is not None else ["-fps_mode", "passthrough"]
        if fmt == "jpg":
            args += ["-c:v", "mjpeg", "-q:v", str(JPEG_QSCALE)]
        else:
            args += ["-c:v", "png", "-pix_fmt", "rgb24", "-compression_level", "3"]
        args += ["-start_number", "1", str(tmp / f"%05d.{fmt}")]
        with progress.bar(expected, f"frames from {video.name}") as pbar:
            run_ffmpeg(args, f"reading {video}", on_progress=lambda n: pbar.update(n - pbar.n))
            written = numbered_images(tmp)
            pbar.update(len(written) - pbar.n)
        _check_complete(video, len(written), expected)
        replaced = _remove_frames(existing)
        for _, p in written:
            os.replace(p, out_dir / p.name)
        fsync_dir(out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    seconds = time.perf_counter() - start
    if info_path is not None:
        record = info.to_json() | {
            "frames_dir": out_dir.name,
            "frames_written": len(written),
            "frame_format": fmt,
            "extracted_fps": fps,
        }
        write_json_atomic(info_path, record)
    return FramesResult(count=len(written), seconds=seconds, replaced=replaced, info=info)


def _expected_at_fps(info: VideoInfo, fps: float) -> int:
    video_seconds = info.frame_count / float(info.fps_fraction)
    return max(1, round(video_seconds * fps))


def _check_complete(video: Path, got: int, expected: int) -> None:
    if got == 0:
        raise FacelabError(f"no frame could be decoded from {video}: the file is damaged; re-encode it")
    # A frame or two of slack for containers whose stored count is approximate.
    if got < expected - max(2, expected // 100):
        raise FacelabError(
            f"{video} looks truncated or damaged: only {got} of {expected} frames decoded; "
            "copy or re-encode the file again"
        )


def _remove_frames(frames: list[tuple[int, Path]]) -> int:
    for _, p in frames:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
    return len(frames)
