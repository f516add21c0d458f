"""`facelab demo`: the workflow on sample clips made from photos shipped in our dependencies.

scikit-image's astronaut portrait (Eileen Collins, NASA, public domain) is the source and
matplotlib's Grace Hopper portrait (public domain) the destination.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from facelab.media.synth import motion_clip
from facelab.workspace import Workspace


def sample_photos() -> dict[str, tuple[np.ndarray, tuple[float, float], float]]:
    """name -> (BGR image, face centre, crop side) for the two sample portraits."""
    import matplotlib.cbook
    import skimage.data

    astronaut = np.ascontiguousarray(skimage.data.astronaut()[:, :, ::-1])
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        hopper = cv2.imdecode(np.frombuffer(f.read(), np.uint8), cv2.IMREAD_COLOR)
    return {
        "src": (astronaut, (222.0, 140.0), 256.0),
        "dst": (hopper, (268.0, 250.0), 470.0),
    }


def make_sample_videos(
    ws: Workspace, seconds: float = 4.0, fps: int = 25, size: int = 384
) -> dict[str, Path]:
    """Write data_src.mp4 and data_dst.mp4 (with sound) into the workspace, unless present."""
    ws.root.mkdir(parents=True, exist_ok=True)
    out = {}
    for side, (image, centre, side_px) in sample_photos().items():
        path = ws.root / f"data_{side}.mp4"
        if not path.exists():
            motion_clip(
                image, path, centre, side_px, size=size, seconds=seconds, fps=fps, with_audio=side == "dst"
            )
        out[side] = path
    return out
