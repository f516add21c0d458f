"""Short clips with head motion, made from a still photo: the demo's sample videos.

The motion is a smooth mix of rotation, zoom and drift, so face detection, tracking and
alignment all get exercised, and a dst clip gets a generated sound track.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from facelab.fsutil import atomic_path
from facelab.media.ffmpeg import run_ffmpeg


def motion_affine(t: float, centre: tuple[float, float], crop_side: float, size: int) -> np.ndarray:
    """Frame-to-clip affine at time t (s): the crop around `centre` with a moving camera."""
    angle = 7.0 * math.sin(2 * math.pi * t / 3.1)
    zoom = 1.0 + 0.08 * math.sin(2 * math.pi * t / 2.3 + 0.7)
    dx = 0.05 * crop_side * math.sin(2 * math.pi * t / 2.7 + 1.3)
    dy = 0.04 * crop_side * math.sin(2 * math.pi * t / 1.9)
    scale = zoom * size / crop_side
    m = cv2.getRotationMatrix2D((centre[0] + dx, centre[1] + dy), angle, scale)
    m[:, 2] += np.array([size / 2 - (centre[0] + dx), size / 2 - (centre[1] + dy)])
    return m


def motion_clip(
    image_bgr: np.ndarray,
    out: Path,
    centre: tuple[float, float],
    crop_side: float,
    size: int = 384,
    seconds: float = 4.0,
    fps: int = 25,
    with_audio: bool = False,
) -> Path:
    n = round(seconds * fps)
    frames = (
        cv2.warpAffine(
            image_bgr,
            motion_affine(i / fps, centre, crop_side, size),
            (size, size),
            flags=cv2.INTER_CUBIC,
            borderMode=cv2.BORDER_REFLECT101,
        )
        for i in range(n)
    )
    args = [
        "-f",
        "rawvideo",
        "-pix_fmt",
        "bgr24",
        "-s",
        f"{size}x{size}",
        "-framerate",
        str(fps),
        "-i",
        "pipe:0",
    ]
    if with_audio:
        # A voice-like tone: two partials with a syllable-rate envelope.
        expr = "0.25*(sin(2*PI*180*t)+0.5*sin(2*PI*360*t))*(0.55+0.45*sin(2*PI*3.7*t))"
        args += ["-f", "lavfi", "-i", f"aevalsrc='{expr}':s=44100:d={seconds}", "-c:a", "aac", "-b:a", "128k"]
    args += ["-c:v", "libx264", "-preset", "fast", "-crf", "18", "-pix_fmt", "yuv420p", "-y"]

    def feed(pipe) -> None:
        for frame in frames:
            pipe.write(np.ascontiguousarray(frame).tobytes())

    with atomic_path(out) as tmp:
        run_ffmpeg(args + [str(tmp)], f"writing {out}", stdin_feed=feed)
    return out
