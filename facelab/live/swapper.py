"""One live frame through the swap, in three steps (the session runs them one after another or each on
its own thread):

- `prepare`: find the faces (detection on a downscaled frame every few frames, tracking between,
  68 landmarks, One-Euro smoothing; `faces.track.FaceFinder`), choose which to swap, and cut the
  model's crops exactly as merge does;
- `infer`: the model (PyTorch or onnxruntime) on all crops at once;
- `blend`: merge's per-face blend (mask, erode/blur, colour transfer, paste) into the frame, with
  its fast (bilinear) paste.

Settings can change between frames (`update`): each frame keeps the settings it was prepared with.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facelab.faces.detect import create_detector, landmark_model
from facelab.faces.identity import DEFAULT_THRESHOLD, descriptor
from facelab.faces.track import FaceFinder
from facelab.merge import settings as merge_settings
from facelab.merge.blend import merge_frame
from facelab.merge.pipeline import FramePlan, MergeModel, cut_faces

# Between detector runs (every 16 frames while faces are tracked), each face's landmarks are placed
# once from its last box: on dst_1.mp4 that is 45 % cheaper than extraction's settings (every 8, placed
# twice) and as close to detecting every frame (1.1 % of the eye distance, jitter unchanged).
REDETECT_EVERY = 16


@dataclass
class Work:
    """A frame on its way through the swap."""

    frame: object  # sources.Frame
    settings: dict
    cut: list[dict] = field(default_factory=list)
    predicted: tuple | None = None
    image: np.ndarray | None = None  # the swapped frame
    model_s: float = 0.0  # the model step's time


class Swapper:
    def __init__(self, model: MergeModel, settings: dict, fps: float, all_faces: bool = False,
                 reference: np.ndarray | None = None, threshold: float = DEFAULT_THRESHOLD):  # fmt: skip
        self.model = model
        one = not all_faces and reference is None  # the largest face
        self.finder = FaceFinder(create_detector("dlib-hog"), landmark_model(), max_faces=1 if one else 0,
                                 redetect_every=REDETECT_EVERY, smooth_fps=fps, refine=False)  # fmt: skip
        self.reference, self.threshold = reference, threshold
        self._is_them: dict[int, bool] = {}  # track -> is the reference person
        self._lock = threading.Lock()
        self.settings = merge_settings.validate(settings)

    def update(self, changes: dict) -> dict:
        """New settings from the next prepared frame on; ValueError names a bad one."""
        with self._lock:
            self.settings = merge_settings.validate(self.settings | changes)
            return dict(self.settings)

    def _chosen(self, image: np.ndarray, faces: list) -> list:
        if self.reference is None:
            return faces
        kept = []
        for f in faces:
            if f.track not in self._is_them:  # once per face as it appears: ~0.1 s on a CPU
                d = float(np.linalg.norm(descriptor(image, f.landmarks) - self.reference))
                self._is_them[f.track] = d <= self.threshold
            if self._is_them[f.track]:
                kept.append(f)
        return kept

    def prepare(self, frame) -> Work:
        with self._lock:
            s = self.settings
        image = frame.image
        faces = self._chosen(image, self.finder.process(image))
        plan = FramePlan(frame.index, Path(), [f.landmarks for f in faces])
        return Work(frame, s, cut_faces(image, plan, self.model.res, self.model.face_type, s))

    def infer(self, work: Work) -> Work:
        if work.cut:
            crops = np.stack([c["dst_crop"] for c in work.cut])
            work.predicted = self.model.predict(crops, work.settings["morph"])
        return work

    def blend(self, work: Work) -> Work:
        image = work.frame.image
        if work.cut:
            faces = self.model.faces(image, work.cut, *work.predicted, work.settings)
            image, _ = merge_frame(image, faces, work.settings, fast=True)
        work.image = image
        return work
