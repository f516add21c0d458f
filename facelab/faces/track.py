"""Finding faces through a video: detect, follow, check and smooth.

Per frame, `FaceFinder`:
- detects on a downscaled copy for speed (retrying with upsampling, then at full size,
  when nothing is found) and places landmarks at full resolution;
- between detections, follows each face from its previous landmarks, which also keeps
  turned heads that the frontal detector misses;
- rejects implausible faces (too small, landmarks that do not fit a face shape);
- optionally smooths landmarks over time with a One Euro filter, which removes jitter
  while adapting its cut-off to fast motion so real movement does not lag.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from facelab.faces.align import FIT_INDICES, MEAN_FACE, transform_points, unit_face_mat
from facelab.faces.detect import Detector, Face, LandmarkModel, Rect

DETECT_LONG_SIDE = 480  # detection runs on a copy no larger than this
MIN_FACE_PX = 40  # faces whose mean-face square (about brow to chin) is smaller are rejected
MAX_SHAPE_ERROR = 0.075  # RMS landmark distance from the mean face, in face-square units
MIN_APPEARANCE = 0.5  # correlation of a followed face with its look in the previous frame
MAX_UNCONFIRMED = 4  # detection rounds a followed face may go unseen by the detector


def unit_scale(unit: np.ndarray) -> float:
    """Unit-square lengths per pixel of a frame -> unit-square fit (`align.unit_face_mat`)."""
    return math.sqrt(abs(np.linalg.det(unit[:, :2])))


def shape_error(landmarks: np.ndarray, unit: np.ndarray) -> float:
    """How far the landmarks are from a face shape once pose and scale are fitted out."""
    fitted = transform_points(landmarks[FIT_INDICES], unit)
    return float(np.sqrt(((fitted - MEAN_FACE) ** 2).sum(1).mean()))


def plausible_fit(landmarks: np.ndarray, shape: tuple[int, ...]) -> np.ndarray | None:
    """The unit-square fit of landmarks that look like a face in the frame, else None."""
    if not np.isfinite(landmarks).all():
        return None
    unit = unit_face_mat(landmarks)
    if 1.0 / unit_scale(unit) < MIN_FACE_PX:
        return None
    h, w = shape[:2]
    centre = landmarks[FIT_INDICES].mean(0)
    if not (0 <= centre[0] < w and 0 <= centre[1] < h):
        return None
    return unit if shape_error(landmarks, unit) <= MAX_SHAPE_ERROR else None


def appearance(image: np.ndarray, unit: np.ndarray) -> np.ndarray:
    """A small normalised grey patch of the inner face, to notice when a follower drifts off it."""
    patch = cv2.warpAffine(image, unit * 24, (24, 24), flags=cv2.INTER_AREA)
    grey = cv2.cvtColor(patch, cv2.COLOR_BGR2GRAY).astype(np.float32).ravel()
    grey -= grey.mean()
    return grey / (np.linalg.norm(grey) + 1e-6)


def landmark_jitter(per_frame: list[np.ndarray | None]) -> float:
    """Mean frame-to-frame landmark motion over the eye distance; None marks a frame without the face."""
    steps = []
    for a, b in zip(per_frame, per_frame[1:], strict=False):
        if a is None or b is None:
            continue
        iod = np.linalg.norm(a[36:42].mean(0) - a[42:48].mean(0))
        steps.append(np.linalg.norm(b - a, axis=1).mean() / iod)
    return float(np.mean(steps)) if steps else 0.0


def iou(a: Rect, b: Rect) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def landmark_box(landmarks: np.ndarray) -> Rect:
    lo, hi = landmarks.min(0), landmarks.max(0)
    return np.array([lo[0], lo[1], hi[0], hi[1]])


class OneEuro:
    """One Euro filter (Casiez et al. 2012) over an array, in units of the face size per second."""

    def __init__(self, fps: float, min_cutoff: float = 1.5, beta: float = 3.0, d_cutoff: float = 1.0):
        self.dt = 1.0 / fps
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self.x: np.ndarray | None = None
        self.dx: np.ndarray | None = None

    def _alpha(self, cutoff: np.ndarray | float) -> np.ndarray | float:
        tau = 1.0 / (2 * math.pi * cutoff)
        return 1.0 / (1.0 + tau / self.dt)

    def __call__(self, x: np.ndarray, scale: float) -> np.ndarray:
        if self.x is None:
            self.x, self.dx = x.copy(), np.zeros_like(x)
            return x
        dx = (x - self.x) / self.dt / scale
        a_d = self._alpha(self.d_cutoff)
        self.dx = a_d * dx + (1 - a_d) * self.dx
        cutoff = self.min_cutoff + self.beta * np.abs(self.dx)
        a = self._alpha(cutoff)
        self.x = a * x + (1 - a) * self.x
        return self.x


@dataclass
class Track:
    unit: np.ndarray  # fit of the last raw landmarks to the unit square
    box_unit: np.ndarray  # detector box as (centre x, centre y, side) in the face's unit square
    look: np.ndarray
    smoother: OneEuro | None = None
    unconfirmed: int = 0  # detection rounds since the detector last saw this face
    id: int = -1

    @staticmethod
    def box_in_unit(rect: Rect, unit: np.ndarray) -> np.ndarray:
        centre = transform_points([((rect[0] + rect[2]) / 2, (rect[1] + rect[3]) / 2)], unit)[0]
        side = (rect[2] - rect[0] + rect[3] - rect[1]) / 2 * unit_scale(unit)
        return np.array([centre[0], centre[1], side])

    def box_for(self, unit: np.ndarray) -> Rect:
        """Where the detector would have put its box for a face with this fit."""
        centre = transform_points([self.box_unit[:2]], unit, invert=True)[0]
        half = self.box_unit[2] / unit_scale(unit) / 2
        return np.array([centre[0] - half, centre[1] - half, centre[0] + half, centre[1] + half])


class FaceFinder:
    """Stateful per-video face finder; call `reset()` at a cut or a gap in the frames."""

    def __init__(
        self,
        detector: Detector,
        landmarks: LandmarkModel,
        max_faces: int = 0,
        redetect_every: int = 8,
        smooth_fps: float | None = None,
        refine: bool = True,
    ):
        self.detector, self.predict = detector, landmarks
        self.max_faces, self.redetect_every, self.smooth_fps = max_faces, redetect_every, smooth_fps
        self.refine = refine  # place a followed face's landmarks twice: from the old box, then the new
        self.tracks: list[Track] = []
        self.since_detect = 0
        self.next_id = 0

    def reset(self) -> None:
        self.tracks, self.since_detect = [], 0

    # -- detection ------------------------------------------------------------------------
    def _detect(self, image: np.ndarray, thorough: bool) -> list[tuple[Rect, float]]:
        h, w = image.shape[:2]
        scale = min(1.0, DETECT_LONG_SIDE / max(h, w))
        small = cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
        attempts = [(small, scale, 0)]
        if thorough:  # nothing followed into this frame: look harder before giving up
            attempts.append((small, scale, 1))
            if scale < 0.75:
                attempts.append((image, 1.0, 0))
        for img, s, up in attempts:
            found = self.detector.detect(img, upsample=up)
            if found:
                return [(rect / s, score) for rect, score in found]
        return []

    # -- per frame ------------------------------------------------------------------------
    def process(self, image: np.ndarray) -> list[Face]:
        followed: list[tuple[Track, Face]] = []
        for track in self.tracks:
            rect = track.box_for(track.unit)
            lm = self.predict(image, rect)
            if self.refine:
                rect = track.box_for(unit_face_mat(lm))  # one refinement step from the new position
                lm = self.predict(image, rect)
            unit = plausible_fit(lm, image.shape)
            if unit is None:
                continue
            look = appearance(image, unit)
            if float(look @ track.look) < MIN_APPEARANCE:
                continue  # the follower slid off the face
            track.unit, track.look = unit, look
            followed.append((track, Face(rect, lm, 0.0, tracked=True)))

        self.since_detect += 1
        if not followed or self.since_detect >= self.redetect_every:
            self.since_detect = 0
            for track, _ in followed:
                track.unconfirmed += 1
            for rect, score in self._detect(image, thorough=not followed):
                lm = self.predict(image, rect)
                unit = plausible_fit(lm, image.shape)
                if unit is None:
                    continue
                face = Face(rect, lm, score)
                box = landmark_box(lm)
                match = next(
                    (i for i, (_, f) in enumerate(followed) if iou(landmark_box(f.landmarks), box) > 0.4),
                    None,
                )
                if match is not None:  # the detector confirms a followed face: take its fresh box
                    track = followed[match][0]
                    track.unit, track.box_unit, track.unconfirmed = unit, Track.box_in_unit(rect, unit), 0
                    followed[match] = (track, face)
                else:
                    box = Track.box_in_unit(rect, unit)
                    track = Track(unit, box, appearance(image, unit), id=self.next_id)
                    self.next_id += 1
                    followed.append((track, face))
            followed = [(t, f) for t, f in followed if t.unconfirmed <= MAX_UNCONFIRMED]

        followed.sort(key=lambda tf: -tf[1].area)  # largest first
        # Drop duplicates (two tracks that converged on one face), then keep the largest max_faces.
        kept: list[tuple[Track, Face]] = []
        for track, face in followed:
            if all(iou(landmark_box(face.landmarks), landmark_box(f.landmarks)) < 0.5 for _, f in kept):
                kept.append((track, face))
        if self.max_faces:
            kept = kept[: self.max_faces]
        self.tracks = [track for track, _ in kept]
        for track, face in kept:
            face.track = track.id
        if self.smooth_fps:
            for track, face in kept:
                if track.smoother is None:
                    track.smoother = OneEuro(self.smooth_fps)
                face.landmarks = track.smoother(face.landmarks, 1.0 / unit_scale(track.unit))
        return [face for _, face in kept]
